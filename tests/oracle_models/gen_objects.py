"""Save the graphs of `graph_models` with a real flambe release, with their outputs.

Runs under the flambe oracle (see ../../../shared/flambe-oracle and make_fixtures.sh), never
under the test suite's interpreter:

    gen_objects.py OUT_DIR --torch-format legacy|zip --expect 0.4.11

For every graph of `graph_models.CONFIGS` (for the importing release): compile the YAML
config, run `PREPARE`, switch Modules to eval mode, record every probe of `PROBES`
(method or dotted path, arguments, result), take `get_state()` and save it four ways
(folder, tar.gz, pickle, pickle tar.gz). `expected.json` records, per graph, its class,
probes and saved state (`saved`: keys, a digest of every value, the metadata) and, per
archive, what the release's own `load_state_from_file` returns (`flambe_read`: "same" or
what differs), and whether the release's own `load()` rebuilds an object whose probes give
the recorded results (`flambe_load`: "same", "different results" or the error).
"""

import argparse
import functools
import hashlib
import json
import os
import sys
import warnings

warnings.filterwarnings("ignore")

import flambe  # noqa: E402
import flambe.compile.serialization as S  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

S.setup_default_modules = lambda: None
from flambe.compile import make_component, yaml  # noqa: E402
from flambe.compile.serialization import load, load_state_from_file, save_state_to_file  # noqa: E402

try:
    make_component(
        torch.nn.Module,
        "torch",
        only_module="torch.nn",
        exclude=["torch.nn.quantized", "torch.nn.qat"],
    )
except TypeError:  # releases before 0.4.6 have no `exclude`
    make_component(torch.nn.Module, "torch", only_module="torch.nn")

MODES = [
    ("dir", {}, ""),
    ("tgz", {"compress": True}, ".tar.gz"),
    ("pkl", {"pickle_only": True}, ".pkl"),
    ("pkltgz", {"compress": True, "pickle_only": True}, ".pkl.tar.gz"),
]


def digest(value):
    if isinstance(value, torch.Tensor):
        t = value.detach().contiguous().cpu()
        return {
            "tensor": str(t.dtype),
            "shape": list(t.shape),
            "sha256": hashlib.sha256(t.numpy().tobytes()).hexdigest(),
        }
    if isinstance(value, np.ndarray):
        return {
            "ndarray": str(value.dtype),
            "shape": list(value.shape),
            "sha256": hashlib.sha256(value.tobytes()).hexdigest(),
        }
    return {"repr": repr(value)}


def plain(key, value):
    if key == "_flambe_source":  # the class's source code: its digest is enough
        return hashlib.sha256(value.encode()).hexdigest()
    return value if isinstance(value, (str, int, float, bool, type(None))) else repr(value)


def describe(state):
    metadata = {}
    for key, value in state._metadata.items():
        if key == "_flambe_directories":
            metadata[key] = sorted(value)
        elif isinstance(value, dict):
            metadata[key] = {k: plain(k, v) for k, v in value.items()}
        else:
            metadata[key] = repr(value)
    return {
        "keys": list(state.keys()),
        "values": {k: digest(v) for k, v in state.items()},
        "metadata": metadata,
    }


def compare(saved, read):
    """'same' when a reading has the saved keys and values, else what differs."""
    missing = sorted(set(saved["values"]) - set(read["values"]))
    extra = sorted(set(read["values"]) - set(saved["values"]))
    changed = sorted(
        k
        for k in set(saved["values"]) & set(read["values"])
        if saved["values"][k] != read["values"][k]
    )
    if not (missing or extra or changed):
        return "same"
    return {
        "missing": missing[:4],
        "extra": extra[:4],
        "changed": changed[:4],
        "counts": [len(missing), len(extra), len(changed)],
    }


def encode(value):
    """A JSON form of a probe's argument or result that the tests decode exactly."""
    if isinstance(value, torch.Tensor):
        return {
            "tensor": value.detach().tolist(),
            "dtype": str(value.dtype).replace("torch.", ""),
            "shape": list(value.shape),
        }
    if isinstance(value, (tuple, list)):
        return {"sequence": [encode(v) for v in value]}
    if value is None or isinstance(value, (bool, int, float, str)):
        return {"value": value}
    raise TypeError(f"cannot record {type(value).__name__}")


def run_probes(obj, probes):
    if isinstance(obj, torch.nn.Module):
        obj.eval()
    with torch.no_grad():
        return [
            encode(functools.reduce(getattr, method.split("."), obj)(*args))
            for method, args in probes
        ]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--torch-format", choices=["legacy", "zip"], required=True)
    parser.add_argument("--expect", required=True)
    args = parser.parse_args()
    if flambe.__version__ != args.expect:
        raise SystemExit(f"imported flambe {flambe.__version__}, expected {args.expect}")
    import graph_models

    if args.torch_format == "legacy":  # what torch 1.3, flambe's torch, wrote
        original = torch.save

        def legacy_save(obj, f, pickle_module=None, pickle_protocol=2, **kwargs):
            kwargs["_use_new_zipfile_serialization"] = False
            if pickle_module is None:
                return original(obj, f, pickle_protocol=pickle_protocol, **kwargs)
            return original(obj, f, pickle_module, pickle_protocol, **kwargs)

        torch.save = S.torch.save = legacy_save
    os.makedirs(args.out, exist_ok=True)
    os.chdir(args.out)  # relative names, as a user in their working directory saved
    expected = {
        "flambe": flambe.__version__,
        "torch_format": args.torch_format,
        "graphs": {},
        "archives": {},
    }
    for name, config in graph_models.CONFIGS.items():
        torch.manual_seed(0)
        schema = yaml.load(config)
        if not callable(schema):  # releases before 0.4.5 register user tags without namespace
            config = config.replace("!graph_models.", "!")
            schema = yaml.load(config)
        obj = schema()
        graph_models.PREPARE.get(name, lambda _: None)(obj)
        probes = graph_models.PROBES[name]
        results = run_probes(obj, probes)
        state = obj.get_state()
        saved = describe(state)
        expected["graphs"][name] = {
            "class": type(obj).__name__,
            "saved": saved,
            "probes": [
                {"method": method, "args": encode(list(arguments)), "result": result}
                for (method, arguments), result in zip(probes, results, strict=True)
            ],
        }
        for mode, kwargs, suffix in MODES:
            path = f"{name}-{mode}{suffix}"
            try:
                save_state_to_file(state, f"{name}-{mode}", **kwargs)
            except Exception as error:  # 0.4.3 cannot save Components held in containers
                expected["graphs"][name].setdefault("save_errors", {})[mode] = repr(error)[:300]
                continue
            try:
                again = run_probes(load(path), probes)
                flambe_load = "same" if again == results else "different results"
            except Exception as error:  # some releases cannot load some of their own graphs
                flambe_load = f"{type(error).__name__}: {error}"[:300]
            expected["archives"][path] = {
                "graph": name,
                "mode": mode,
                "flambe_load": flambe_load,
                "flambe_read": compare(saved, describe(load_state_from_file(path))),
            }
    with open("expected.json", "w") as f:
        json.dump(expected, f, indent=1, sort_keys=True)
    print(
        f"flambe {flambe.__version__} ({args.torch_format}): {len(expected['graphs'])} graphs, "
        f"{len(expected['archives'])} archives",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
