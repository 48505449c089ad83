"""``kernelshape train``: its options are the fields of ``kernelshape.train.TrainConfig``."""

from __future__ import annotations

import argparse
import os
from dataclasses import MISSING, fields
from typing import Any

from kernelshape.cli.arguments import command, integer, json_flag, json_object, real
from kernelshape.cli.output import Progress, UsageError, check_output_dir, fmt, table

EPILOG = """\
Reference trainer: a deep network on an offline dataset (mnist1d, digits, mnist5k,
teacher, or an .npz with x_train, y_train, x_test, y_test); the network's input shape and
classes must match the data. Methods dks/tat shape the activations (or use --constants FILE),
eoc/none/ll are baselines, resnet-bn trains the ResNet-with-BatchNorm counterpart of an mlp or
convnet. A run directory (--out) holds config.json, metrics.jsonl and checkpoints; --resume
DIR continues it exactly. Exit code 1 when the run diverges.

examples:
  kernelshape train --net mlp:depth=20,width=256,input_dim=40,activation=tanh \\
                    --method dks --data mnist1d --steps 500 --out runs/dks
  kernelshape train --net mlp:depth=20,width=64,input_dim=32 --method tat --data teacher \\
                    --optimizer kfac --steps 200 --json
  kernelshape train --backend jax --method dks --data mnist1d --steps 500 --dtype float32 \\
      --net resnet:depth=18,width=16,shortcut_weight=0.8,input_shape=40x1,num_classes=10
  kernelshape train --resume runs/dks --steps 1000"""


def _config_fields() -> list[Any]:
    from kernelshape.train.config import TrainConfig

    return list(fields(TrainConfig))


def _type(f: Any) -> Any:
    """The argparse type of a TrainConfig field, from its default / annotation."""
    default = f.default if f.default is not MISSING else f.default_factory()
    annotation = str(f.type)
    if isinstance(default, dict):
        return json_object(f"--{f.name.replace('_', '-')}")
    if annotation.startswith("int"):
        return integer(-1 if f.name == "data_parallel" else 0)
    if "float" in annotation:
        return real
    return str


def register(sub: Any) -> None:
    """``train``: one option per TrainConfig field, plus the run's inputs and outputs."""
    p = command(sub, "train", "train a deep vanilla network (reference trainer)", EPILOG)
    p.add_argument("--net", metavar="SPEC", help="network SPEC or JSON path")
    p.add_argument("--resume", metavar="DIR", help="continue the run saved in DIR")
    p.add_argument("--out", metavar="DIR", help="run directory (config, metrics, checkpoints)")
    p.add_argument("--constants", metavar="FILE", help="constants document to use (dks/tat/eoc)")
    for f in _config_fields():
        default = f.default if f.default is not MISSING else f.default_factory()
        shown = "" if default is None or default == {} else f" (default {default})"
        meta = f.metadata
        p.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, default=None,
                       type=_type(f), choices=meta["choices"], metavar=meta["metavar"],
                       help=meta["help"] + shown)
    json_flag(p)
    p.set_defaults(handler=train)


def _result(result: Any, seconds: float) -> dict[str, Any]:
    history = list(result.history or [])
    last = history[-1] if history else {}
    return {"status": result.status, "step": result.step, "message": result.message,
            "loss": last.get("loss"), "acc": last.get("acc"),
            "test_loss": result.test_loss, "test_acc": result.test_acc,
            "out": os.fspath(result.out) if result.out is not None else None,
            "seconds": round(seconds, 3)}


def train(args: argparse.Namespace) -> int:
    """kernelshape train (reference trainer)."""
    options = {f.name: getattr(args, f.name) for f in _config_fields()
               if getattr(args, f.name) is not None}
    if args.resume is not None:
        clash = ["--" + o.replace("_", "-") for o in ("net", "out", "constants", *options)
                 if o != "steps" and (getattr(args, o, None) is not None)]
        if clash:
            raise UsageError(f"--resume continues a saved run with its own settings; drop "
                             f"{', '.join(clash)} (only --steps may change)")
        if not os.path.isdir(args.resume):
            raise UsageError(f"--resume {args.resume!r}: no such run directory")
    elif args.net is None:
        raise UsageError("give --net SPEC to start a run (e.g. --net "
                         "mlp:depth=20,width=256,input_dim=40,activation=tanh) "
                         "or --resume DIR to continue one")
    from kernelshape.train import TrainConfig, resume
    from kernelshape.train import train as train_run

    with Progress("training", enabled=False) as timer:
        if args.resume is not None:
            result = resume(args.resume, steps=args.steps, progress=None)
        else:
            config = TrainConfig(**options)        # every option checked before any work
            if args.out is not None:
                check_output_dir(args.out, "run directory")
            constants = None
            if args.constants is not None:
                from kernelshape.constants import read_document

                constants = read_document(args.constants)  # train() rechecks it
            result = train_run(args.net, config, constants=constants, out=args.out,
                               progress=None)
    payload = _result(result, timer.elapsed)
    lines = [table(["field", "value"],
                   [["status", payload["status"]], ["steps", payload["step"]],
                    ["train loss (last logged)", fmt(payload["loss"])],
                    ["train accuracy (last logged)", fmt(payload["acc"])],
                    ["test loss", fmt(payload["test_loss"])],
                    ["test accuracy", fmt(payload["test_acc"])],
                    ["wall time", f"{payload['seconds']:.1f} s"],
                    ["run directory", payload["out"] or "-"]])]
    if result.status != "completed":
        lines.append(f"message: {result.message}")
    if args.json and args.emit_json is not None:
        args.emit_json(payload)
    else:
        print("\n".join(lines))
    return 0 if result.status == "completed" else 1
