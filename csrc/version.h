// The engine's version: part of every JIT cache key and shown by `attention_engine.__version__`.
#pragma once
#define AE_VERSION "0.1.0"
