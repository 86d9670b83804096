// placeholder so templates/ is never empty; replaced by real helpers.
