// Python bindings of the JIT (csrc/jit): compile, cache, launch, cache administration.
#include <array>
#include <cstring>

#include <torch/csrc/autograd/python_variable.h>  // THPVariable_Check, THPVariable_Unpack

#include "jit/cache_admin.h"
#include "jit/check_arches.h"
#include "jit/disk_cache.h"
#include "jit/dynlib.h"
#include "jit/errors.h"
#include "jit/kernel_cache.h"
#include "jit/launch.h"
#include "torch/bindings.h"

namespace ae::py {
namespace {

namespace py = pybind11;
using namespace ae::jit;

// Created once and never freed: exception types must outlive every translator call.
PyObject* g_jit_error = nullptr;
PyObject* g_compile_error = nullptr;

PyObject* text(const std::string& s) {  // logs may hold bytes that are not UTF-8
  return PyUnicode_DecodeUTF8(s.data(), Py_ssize_t(s.size()), "replace");
}

void translate(std::exception_ptr p) {
  try {
    if (p) std::rethrow_exception(p);
  } catch (const CompileError& e) {
    PyObject* msg = text(e.what());
    PyObject* exc = PyObject_CallFunctionObjArgs(g_compile_error, msg, nullptr);
    Py_DECREF(msg);
    if (!exc) return;  // a Python error is already set
    for (auto [name, value] : {std::pair{"log", &e.log()}, std::pair{"source", &e.source()},
                               std::pair{"log_path", &e.log_path()}}) {
      PyObject* v = text(*value);
      PyObject_SetAttrString(exc, name, v);
      Py_DECREF(v);
    }
    PyErr_SetObject(g_compile_error, exc);
    Py_DECREF(exc);
  } catch (const JitError& e) {
    PyObject* msg = text(e.what());
    PyErr_SetObject(g_jit_error, msg);
    Py_DECREF(msg);
  }
}

// What Python holds: shared with the cache, so the same kernel is one object in C++.
struct PyKernel {
  KernelPtr k;
};

Dim3 to_dim3(const py::object& o, const char* what) {
  Dim3 d;
  if (py::isinstance<py::int_>(o)) {
    d.x = o.cast<unsigned>();
    return d;
  }
  auto t = o.cast<std::vector<unsigned>>();
  if (t.empty() || t.size() > 3)
    throw py::value_error(std::string(what) + " must be an int or 1 to 3 ints");
  unsigned* out[3] = {&d.x, &d.y, &d.z};
  for (size_t i = 0; i < t.size(); ++i) *out[i] = t[i];
  return d;
}

// Kernel parameters, packed as cuLaunchKernel wants (a pointer to each value).
// Tensor -> its data pointer; None -> null pointer; int -> i32; float -> f32;
// ("i32"|"u32"|"i64"|"u64"|"f32"|"f64"|"ptr", value) for any other type.
class PackedArgs {
 public:
  explicit PackedArgs(const py::sequence& args) {
    slots_.resize(args.size());
    for (size_t i = 0; i < args.size(); ++i) {
      pack(args[i], &slots_[i]);
      ptrs_.push_back(slots_[i].data());
    }
  }
  void** data() { return ptrs_.empty() ? nullptr : ptrs_.data(); }

 private:
  using Slot = std::array<char, 8>;
  template <typename T>
  static void put(Slot* s, T v) {
    static_assert(sizeof(T) <= 8, "slot too small");
    std::memcpy(s->data(), &v, sizeof v);
  }
  static void pack(const py::handle& a, Slot* s) {
    if (THPVariable_Check(a.ptr())) return put(s, THPVariable_Unpack(a.ptr()).data_ptr());
    if (a.is_none()) return put<void*>(s, nullptr);
    if (py::isinstance<py::bool_>(a)) return put<int32_t>(s, a.cast<bool>() ? 1 : 0);
    if (py::isinstance<py::int_>(a)) {
      long long v = a.cast<long long>();
      if (v < INT32_MIN || v > INT32_MAX)
        throw py::value_error("kernel argument " + std::to_string(v) +
                              " does not fit in i32; pass (\"i64\", v)");
      return put<int32_t>(s, int32_t(v));
    }
    if (py::isinstance<py::float_>(a)) return put<float>(s, a.cast<float>());
    if (py::isinstance<py::tuple>(a) && py::len(a) == 2) {
      auto t = a.cast<py::tuple>();
      std::string type = t[0].cast<std::string>();
      if (type == "i32") return put<int32_t>(s, t[1].cast<int32_t>());
      if (type == "u32") return put<uint32_t>(s, t[1].cast<uint32_t>());
      if (type == "i64") return put<int64_t>(s, t[1].cast<int64_t>());
      if (type == "u64") return put<uint64_t>(s, t[1].cast<uint64_t>());
      if (type == "f32") return put<float>(s, t[1].cast<float>());
      if (type == "f64") return put<double>(s, t[1].cast<double>());
      if (type == "ptr") return put<uintptr_t>(s, t[1].cast<uintptr_t>());
    }
    throw py::type_error("unsupported kernel argument: " + std::string(py::repr(a)));
  }
  std::vector<Slot> slots_;
  std::vector<void*> ptrs_;
};

void* stream_pointer(const py::object& stream) {
  if (stream.is_none()) return nullptr;
  py::object s = py::hasattr(stream, "cuda_stream") ? stream.attr("cuda_stream") : stream;
  return reinterpret_cast<void*>(s.cast<uintptr_t>());
}

py::dict figures_dict(const KernelFigures& f) {
  py::dict d;
  d["registers"] = f.registers;
  d["smem_bytes"] = f.smem_bytes;
  d["spill_stores"] = f.spill_stores;
  d["spill_loads"] = f.spill_loads;
  d["stack_frame"] = f.stack_frame;
  d["agprs"] = f.agprs;  // AMD only (-1 elsewhere)
  d["sgprs"] = f.sgprs;
  return d;
}

std::string dir_or_default(const std::optional<std::string>& dir) {
  return dir ? *dir : default_cache_dir();
}

void bind_kernel(py::module_& m) {
  py::class_<PyKernel>(m, "Kernel", "A compiled kernel (from jit_compile); launchable.")
      .def_property_readonly("key", [](const PyKernel& p) { return p.k->key.hex(); })
      .def_property_readonly("arch", [](const PyKernel& p) { return p.k->result.arch; })
      .def_property_readonly("name", [](const PyKernel& p) { return p.k->result.lowered_name; })
      .def_property_readonly("threads", [](const PyKernel& p) { return p.k->result.threads; })
      .def_property_readonly("log", [](const PyKernel& p) {
        return py::reinterpret_steal<py::str>(text(p.k->result.log));
      })
      .def_property_readonly("from_disk", [](const PyKernel& p) { return p.k->from_disk; })
      .def_property_readonly("binary", [](const PyKernel& p) { return py::bytes(p.k->result.binary); })
      .def_property_readonly("registers", [](const PyKernel& p) { return p.k->result.figures.registers; })
      .def_property_readonly("smem_bytes", [](const PyKernel& p) { return p.k->result.figures.smem_bytes; })
      .def_property_readonly("spill_stores", [](const PyKernel& p) { return p.k->result.figures.spill_stores; })
      .def_property_readonly("spill_loads", [](const PyKernel& p) { return p.k->result.figures.spill_loads; })
      .def_property_readonly("stack_frame", [](const PyKernel& p) { return p.k->result.figures.stack_frame; })
      .def("figures", [](const PyKernel& p) { return figures_dict(p.k->result.figures); })
      .def("load", [](const PyKernel& p, int device) { kernel_function(*p.k, device); },
           py::arg("device"), "Loads the module on a device now (else on first launch).")
      .def(
          "launch",
          [](const PyKernel& p, const py::sequence& args, const py::object& grid,
             const py::object& block, unsigned smem, const py::object& stream,
             const py::object& cluster, int device) {
            LaunchConfig c;
            c.grid = to_dim3(grid, "grid");
            c.block = to_dim3(block, "block");
            c.cluster = to_dim3(cluster, "cluster");
            c.dynamic_smem = smem;
            c.stream = stream_pointer(stream);
            c.device = device;
            PackedArgs packed(args);
            launch_kernel(*p.k, c, packed.data());
          },
          py::arg("args"), py::arg("grid"), py::arg("block"), py::arg("smem") = 0,
          py::arg("stream") = py::none(), py::arg("cluster") = 1, py::arg("device") = -1,
          "Launches on `stream` (a torch.cuda.Stream, or its cuda_stream int). args: tensors "
          "(data pointers), None (null), int (i32), float (f32), or (type, value) with type "
          "in i32 u32 i64 u64 f32 f64 ptr.")
      .def("__repr__", [](const PyKernel& p) {
        return "<attention_engine Kernel " + p.k->result.lowered_name + " " + p.k->result.arch +
               " " + p.k->key.hex() + ">";
      });
}

void bind_compile(py::module_& m) {
  m.def("add_library_search_path", &add_library_search_path, py::arg("dir"),
        "Adds a folder searched for libnvrtc / hipRTC / libcuda after the loader's own paths.");
  m.def("library_search_paths", &library_search_paths);
  m.def("nvidia_arch", &nvidia_arch, py::arg("major"), py::arg("minor"),
        py::arg("arch_specific") = false, "(9, 0, True) -> 'sm_90a'");
  m.def(
      "jit_compile",
      [](const std::string& source, const std::string& kernel, const std::string& arch,
         const std::vector<std::string>& options, int threads, const std::string& file_name) {
        CompileRequest r;
        r.source = source;
        r.kernel = kernel;
        r.arch = arch;
        r.options = options;
        r.threads = threads;
        r.file_name = file_name;
        py::gil_scoped_release release;  // compiles take ~0.1-1 s
        return PyKernel{default_kernel_cache().get(r)};
      },
      py::arg("source"), py::arg("kernel"), py::arg("arch"),
      py::arg("options") = std::vector<std::string>{}, py::arg("threads") = 0,
      py::arg("file_name") = "ae_kernel.cu",
      "Compiles (or finds in the memory / disk cache) a kernel. Raises CompileError.");
  m.def(
      "jit_find",
      [](const std::string& key) -> std::optional<PyKernel> {
        Hash128 h;
        if (!Hash128::from_hex(key, &h)) throw py::value_error("not a kernel key: " + key);
        KernelPtr k = default_kernel_cache().find(h);
        if (!k) return std::nullopt;
        return PyKernel{k};
      },
      py::arg("key"), "The kernel with this key if it is in memory, else None (no hashing).");
  m.def("jit_compiler_version",
        [](const std::string& arch) { return compiler_for_arch(arch).version(); }, py::arg("arch"));
  m.def(
      "jit_check_arches",
      [](const std::string& source, const std::string& kernel,
         const std::optional<std::vector<std::string>>& arches,
         const std::vector<std::string>& options) {
        CompileRequest r;
        r.source = source;
        r.kernel = kernel;
        r.options = options;
        std::vector<ArchReport> reports;
        {
          py::gil_scoped_release release;
          reports = compile_for_arches(r, arches ? *arches : default_check_arches());
        }
        py::list out;
        for (const auto& a : reports) {
          py::dict d = figures_dict(a.figures);
          d["arch"] = a.arch;
          d["ok"] = a.ok;
          d["name"] = a.lowered_name;
          d["error"] = py::reinterpret_steal<py::str>(text(a.error));
          d["log"] = py::reinterpret_steal<py::str>(text(a.log));
          d["from_disk"] = a.from_disk;
          out.append(d);
        }
        return out;
      },
      py::arg("source"), py::arg("kernel"), py::arg("arches") = py::none(),
      py::arg("options") = std::vector<std::string>{},
      "Compiles for each arch (default sm_80, sm_90a, gfx90a); one dict of figures each.");
}

void bind_cache(py::module_& m) {
  m.def("jit_cache_dir", [] { return default_kernel_cache().disk().dir(); },
        "The folder of this process's kernel cache.");
  m.def("jit_disk_cache_usable", [] { return default_kernel_cache().disk().usable(); });
  m.def("jit_clear_memory_cache", [] { default_kernel_cache().clear_memory(); });
  m.def("jit_stats", [] {
    CacheStats s = default_kernel_cache().stats();
    py::dict d;
    d["memory_hits"] = s.memory_hits;
    d["disk_hits"] = s.disk_hits;
    d["compiles"] = s.compiles;
    d["corrupt_entries"] = s.corrupt_entries;
    return d;
  });
  m.def(
      "jit_cache_info",
      [](const std::optional<std::string>& dir) {
        CacheSummary s = summarize_cache(dir_or_default(dir));
        py::dict d;
        d["dir"] = s.dir;
        d["kernels"] = s.kernels;
        d["failed_logs"] = s.failed_logs;
        d["temp_files"] = s.temp_files;
        d["total_bytes"] = s.total_bytes;
        return d;
      },
      py::arg("dir") = py::none());
  m.def("jit_cache_clear",
        [](const std::optional<std::string>& dir) { return clear_cache(dir_or_default(dir)); },
        py::arg("dir") = py::none(), "Removes every cache file; returns how many.");
  m.def(
      "jit_cache_prune",
      [](uint64_t max_bytes, const std::optional<std::string>& dir) {
        PruneResult r = prune_cache(dir_or_default(dir), max_bytes);
        py::dict d;
        d["removed"] = r.removed;
        d["freed_bytes"] = r.freed_bytes;
        d["remaining_bytes"] = r.remaining_bytes;
        return d;
      },
      py::arg("max_bytes"), py::arg("dir") = py::none(),
      "Removes the least recently used files until at most max_bytes remain.");
}

}  // namespace

void bind_jit(pybind11::module_& m) {
  g_jit_error = PyErr_NewException("attention_engine._C.JitError", PyExc_RuntimeError, nullptr);
  g_compile_error = PyErr_NewException("attention_engine._C.CompileError", g_jit_error, nullptr);
  m.attr("JitError") = py::handle(g_jit_error);
  m.attr("CompileError") = py::handle(g_compile_error);
  py::register_exception_translator(&translate);
  bind_kernel(m);
  bind_compile(m);
  bind_cache(m);
}

}  // namespace ae::py
