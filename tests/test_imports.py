"""Importing any transferlab module (or an entry point) changes no global state: no matplotlib backend,
no warnings filter, no logging handler, filter or level, no torch setting, no OmegaConf resolver, no
patched Lightning launcher. A fresh interpreter imports the libraries first, takes a snapshot, imports
every module of the package and src/*.py, and compares."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import ROOT

PROBE = r"""
import importlib, importlib.util, json, logging, pkgutil, sys, warnings
import matplotlib, torch, lightning, hydra, omegaconf, timm, torchvision, sklearn, tensorboard, rich, PIL
import lightning.fabric.strategies.launchers.subprocess_script as fabric_launcher
import lightning.pytorch.strategies.launchers.subprocess_script as trainer_launcher
from omegaconf import OmegaConf

def snapshot():
    loggers = {name: (type(logger).__name__, getattr(logger, "level", None),
                      [type(h).__name__ for h in getattr(logger, "handlers", [])],
                      [type(f).__name__ for f in getattr(logger, "filters", [])])
               for name, logger in logging.Logger.manager.loggerDict.items()
               # Configured loggers only: importing a library creates plain ones (level 0, no handler, no filter).
               if getattr(logger, "level", 0) or getattr(logger, "handlers", None) or getattr(logger, "filters", None)}
    root = logging.getLogger()
    return {
        "backend": repr(dict.__getitem__(matplotlib.rcParams, "backend")),
        "pyplot imported": "matplotlib.pyplot" in sys.modules,
        "warnings": [repr(f) for f in warnings.filters],
        "root logger": (root.level, [type(h).__name__ for h in root.handlers], [type(f).__name__ for f in root.filters]),
        "loggers": loggers,
        "torch": (str(torch.get_default_dtype()), torch.are_deterministic_algorithms_enabled(), torch.get_num_threads(),
                  torch.backends.cudnn.benchmark, torch.get_float32_matmul_precision(), torch.is_grad_enabled()),
        "resolvers": sorted(name for name in ("coalesce", "path_safe", "run_stamp", "config_subdir") if OmegaConf.has_resolver(name)),
        "launchers": (fabric_launcher._hydra_subprocess_cmd.__module__, trainer_launcher._hydra_subprocess_cmd.__module__),
        "sys.path": list(sys.path),
    }

before = snapshot()
import transferlab
modules = [m.name for m in pkgutil.walk_packages(transferlab.__path__, "transferlab.")]
for name in modules:
    importlib.import_module(name)
for script in sys.argv[1:]:
    spec = importlib.util.spec_from_file_location(f"script_{len(modules)}", script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # as an import registers it (dataclasses look their module up there)
    spec.loader.exec_module(module)
    modules.append(script)
after = snapshot()
print(json.dumps({"modules": modules, "changed": {k: [before[k], after[k]] for k in before if before[k] != after[k]}}))
"""


def test_importing_any_module_changes_no_global_state():
    scripts = sorted(str(p) for p in (ROOT / "src").glob("*.py"))
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *scripts], capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(report["modules"]) > 50 and any(m.endswith("train.py") for m in report["modules"])
    assert report["changed"] == {}
