"""Stand-in ``tensorrt`` modules, one per API generation, built from the real API surface, for tests that drive the
backend's build code where TensorRT cannot be installed (this project's machines: see README).

Only the symbols ``exporters/tensorrt/`` touches are modelled, with their real names and numbering; a
symbol the real generation lacks is absent here too, so code that uses it fails with the same AttributeError.
Where the surface comes from:
- ``BuilderFlag``: TensorRT 10.x's 29 members and values as in the NvInfer.h enum mirrored by trtx-sys 0.5.0
  (docs.rs/trtx-sys/0.5.0, nvinfer1::BuilderFlag); TensorRT 11.x's 21 members, renumbered, as in trtx-sys latest
  (TensorRT 11 headers), which matches NVIDIA's "Removed Python APIs and Replacements" (11.4): FP16, INT8, FP8, BF16,
  INT4, FP4, OBEY/PREFER_PRECISION_CONSTRAINTS gone (and the Python DIRECT_IO).
- ``NetworkDefinitionCreationFlag``: 10.x EXPLICIT_BATCH=0, STRONGLY_TYPED=1, PREFER_AOT/JIT_PYTHON_PLUGINS
  (docs.nvidia.com/deeplearning/tensorrt/latest/_static/python-api/infer/Core/Builder.html, 10.x); 11.x
  STRONGLY_TYPED=0 (deprecated, ignored: always strongly typed), PREFER_AOT/JIT_PYTHON_PLUGINS (11.0.0 Builder.html).
- ``Builder(logger)``, ``create_network(flags)``, ``create_builder_config()``, ``create_optimization_profile()``,
  ``build_serialized_network(network, config)``; ``OnnxParser(network, logger).parse(bytes)``, ``num_errors``,
  ``get_error(i)``; ``IBuilderConfig.set_memory_pool_limit(MemoryPoolType.WORKSPACE, bytes)``, ``set_flag``,
  ``add_optimization_profile``, ``create_timing_cache(bytes)``, ``set_timing_cache(cache, ignore_mismatch) -> bool``,
  ``get_timing_cache().serialize()``; ``IOptimizationProfile.set_shape(name, min, opt, max)``; ``Logger.WARNING``;
  ``__version__`` (the same in 10.x and 11.x Python bindings).
Behaviour modelled: a strongly typed 10.x network with a precision flag set fails to build (TensorRT 10 logs an
error and returns None); the parser accepts only graphs ONNX's full type check accepts (strong typing inserts no
casts) and records the graph it parsed.
"""

import enum
import types

BUILDER_FLAGS_10 = ("FP16", "INT8", "DEBUG", "GPU_FALLBACK", "REFIT", "DISABLE_TIMING_CACHE", "TF32",
                    "SPARSE_WEIGHTS", "SAFETY_SCOPE", "OBEY_PRECISION_CONSTRAINTS", "PREFER_PRECISION_CONSTRAINTS",
                    "DIRECT_IO", "REJECT_EMPTY_ALGORITHMS", "VERSION_COMPATIBLE", "EXCLUDE_LEAN_RUNTIME", "FP8",
                    "ERROR_ON_TIMING_CACHE_MISS", "BF16", "DISABLE_COMPILATION_CACHE", "STRIP_PLAN",
                    "REFIT_IDENTICAL", "WEIGHT_STREAMING", "INT4", "REFIT_INDIVIDUAL", "STRICT_NANS",
                    "MONITOR_MEMORY", "FP4", "EDITABLE_TIMING_CACHE", "DISTRIBUTIVE_INDEPENDENCE")
BUILDER_FLAGS_11 = {"DEBUG": 2, "GPU_FALLBACK": 3, "REFIT": 4, "DISABLE_TIMING_CACHE": 5, "TF32": 6,
                    "SPARSE_WEIGHTS": 7, "SAFETY_SCOPE": 8, "VERSION_COMPATIBLE": 12, "EXCLUDE_LEAN_RUNTIME": 13,
                    "ERROR_ON_TIMING_CACHE_MISS": 15, "DISABLE_COMPILATION_CACHE": 17, "STRIP_PLAN": 18,
                    "REFIT_IDENTICAL": 19, "WEIGHT_STREAMING": 20, "REFIT_INDIVIDUAL": 22, "STRICT_NANS": 23,
                    "MONITOR_MEMORY": 24, "EDITABLE_TIMING_CACHE": 26, "DISTRIBUTIVE_INDEPENDENCE": 27,
                    "REQUIRE_USER_ALLOCATION": 28}
PRECISION_FLAGS = ("FP16", "INT8", "FP8", "BF16", "INT4", "FP4")


def make(version: str, timing_cache_accepted: bool = True) -> types.ModuleType:
    """A stand-in ``tensorrt`` module of ``version``'s generation (10.x or 11.x). ``trt.calls`` records what the
    backend asked for; ``trt.built`` every network built."""
    gen = int(version.split(".")[0])
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.calls, trt.built = [], []
    if gen == 10:
        trt.BuilderFlag = enum.IntEnum("BuilderFlag", {n: i for i, n in enumerate(BUILDER_FLAGS_10)})
        trt.NetworkDefinitionCreationFlag = enum.IntEnum(
            "NetworkDefinitionCreationFlag",
            {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1, "PREFER_AOT_PYTHON_PLUGINS": 2, "PREFER_JIT_PYTHON_PLUGINS": 3})
    elif gen == 11:
        trt.BuilderFlag = enum.IntEnum("BuilderFlag", BUILDER_FLAGS_11)
        trt.NetworkDefinitionCreationFlag = enum.IntEnum(
            "NetworkDefinitionCreationFlag",
            {"STRONGLY_TYPED": 0, "PREFER_AOT_PYTHON_PLUGINS": 1, "PREFER_JIT_PYTHON_PLUGINS": 2})
    else:
        raise ValueError(f"no stand-in for TensorRT {version}")
    trt.MemoryPoolType = enum.IntEnum("MemoryPoolType", {"WORKSPACE": 0, "DLA_MANAGED_SRAM": 1,
                                                         "DLA_LOCAL_DRAM": 2, "DLA_GLOBAL_DRAM": 3,
                                                         "TACTIC_DRAM": 4, "TACTIC_SHARED_MEMORY": 5})

    class Logger:
        INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

        def __init__(self, severity=1):
            self.severity = severity

    class Network:
        def __init__(self, flags):
            self.flags = flags
            strong_bit = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
            self.strongly_typed = gen == 11 or bool(flags & strong_bit)
            self.graph = None

    class Profile:
        def set_shape(self, name, min, opt, max):
            trt.calls.append(("set_shape", name, tuple(min), tuple(opt), tuple(max)))

    class TimingCache:
        def __init__(self, data):
            self.data = bytes(data)

        def serialize(self):
            return memoryview(self.data or f"timing-cache {version}".encode())

    class Config:
        def __init__(self):
            self.flags, self.profiles, self.cache, self.pools = set(), [], None, {}

        def set_memory_pool_limit(self, pool, size):
            self.pools[trt.MemoryPoolType(pool).name] = size

        def set_flag(self, flag):
            self.flags.add(trt.BuilderFlag(flag).name)

        def add_optimization_profile(self, profile):
            self.profiles.append(profile)
            return len(self.profiles) - 1

        def create_timing_cache(self, data):
            trt.calls.append(("create_timing_cache", bytes(data)))
            return TimingCache(data)

        def set_timing_cache(self, cache, ignore_mismatch):
            trt.calls.append(("set_timing_cache", ignore_mismatch))
            self.cache = cache
            return timing_cache_accepted

        def get_timing_cache(self):
            return self.cache

    class Builder:
        def __init__(self, logger):
            self.logger = logger

        def create_network(self, flags=0):
            trt.calls.append(("create_network", flags))
            return Network(flags)

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            precision = sorted(set(config.flags) & set(PRECISION_FLAGS))
            trt.built.append({"network": network, "flags": sorted(config.flags), "pools": dict(config.pools),
                              "profiles": len(config.profiles)})
            if network.strongly_typed and precision:
                return None  # TensorRT 10: precision flags are an error on a strongly typed network
            return memoryview(f"plan {version}".encode())

    class OnnxParser:
        def __init__(self, network, logger):
            self.network, self.errors = network, []

        def parse(self, data):
            import hashlib

            trt.calls.append(("parse", hashlib.sha256(bytes(data)).hexdigest()))  # what was parsed
            try:
                import onnx
            except ImportError:  # without onnx: accept
                self.network.graph = bytes(data)
                return True

            try:
                model = onnx.load_from_string(bytes(data))
                onnx.checker.check_model(model, full_check=True)
            except Exception as e:  # the real parser reports, it does not raise
                self.errors.append(str(e).splitlines()[0])
                return False
            self.network.graph = model
            return True

        @property
        def num_errors(self):
            return len(self.errors)

        def get_error(self, i):
            return self.errors[i]

    trt.Logger, trt.Builder, trt.OnnxParser = Logger, Builder, OnnxParser
    return trt
