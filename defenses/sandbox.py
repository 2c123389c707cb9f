"""Child-process entry point of `models.verify_model_file`: limit this process's memory and CPU time,
then run the allow-list check and the first Keras load of an untrusted model file, and write the
outcome as JSON. A crafted file can at worst kill this process, never the caller.

Usage (internal): python -m defenses.sandbox MODEL RESULT.json [--arch NAME] [--memory-bytes N]
"""

import argparse
import json
import resource
import sys
from pathlib import Path


def limit_resources(memory_bytes: int, cpu_seconds: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def outcome_for(model_path: Path, arch: str | None, limits: dict | None = None) -> dict:
    from defenses.data import DataError
    from defenses.modelcheck import Limits, ModelRefused
    from defenses.models import load_and_describe_unsandboxed

    try:
        _, report = load_and_describe_unsandboxed(model_path, arch, Limits(**(limits or {})))
    except (ModelRefused, DataError) as refusal:
        return {"ok": False, "reason": str(refusal)}
    except (MemoryError, ImportError, OSError) as error:
        # Under RLIMIT_AS an allocation fails as MemoryError, or as a shared library that cannot be mapped.
        if isinstance(error, MemoryError) or "map" in str(error):
            return {"ok": False, "reason": f"{model_path.name} exceeded the loader's memory limit; refused."}
        return {"ok": False, "reason": f"Keras could not load {model_path.name}: {type(error).__name__}: {error}"}
    except Exception as error:  # Keras' own refusals (safe_mode, bad configs) arrive as many types
        return {"ok": False, "reason": f"Keras could not load {model_path.name}: {type(error).__name__}: {error}"}
    return {"ok": True, "report": report.as_dict()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("model", type=Path)
    parser.add_argument("result", type=Path)
    parser.add_argument("--arch")
    parser.add_argument("--memory-bytes", type=int, default=4 * 2**30)
    parser.add_argument("--cpu-seconds", type=int, default=120)
    parser.add_argument("--limits", type=json.loads, default={}, help="modelcheck.Limits fields as JSON")
    args = parser.parse_args(argv)
    limit_resources(args.memory_bytes, args.cpu_seconds)
    outcome = outcome_for(args.model, args.arch, args.limits)
    args.result.write_text(json.dumps(outcome))
    return 0


if __name__ == "__main__":
    sys.exit(main())
