#include <gtest/gtest.h>

#include "jit/embedded_templates.h"

TEST(Embedded, TemplatesAreSortedAndTerminated) {
  size_t n = 0;
  const ae::jit::EmbeddedFile* files = ae::jit::embedded_templates(&n);
  for (size_t i = 0; i < n; ++i) {
    EXPECT_EQ(files[i].data[files[i].size], '\0');
    if (i > 0) EXPECT_LT(std::string(files[i - 1].path), std::string(files[i].path));
  }
}
