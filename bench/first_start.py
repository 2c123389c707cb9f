"""First start of `make run`: how long the demo data takes on this machine, ours against the way it was made
before issue 13 (the clean network trained too, though the demo never imports it).

    .venv/bin/python -m bench.first_start

In a fresh var/bench-first-start/: `manage.py demo_data` as make run starts it (generation, then the
checked import of 4 BadNets and 10 sets), then `build_benchmark("demo", with_clean=True)` alone, the old
generation. Prints both wall times, their ratio, and every BadNet's CA and ASR (the demo's promise: CA and
ASR of at least 95 %). The demo team exists before either starts: `ensure_demo_user` makes it.
"""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "var" / "bench-first-start"


def main() -> None:
    shutil.rmtree(VAR, ignore_errors=True)
    VAR.mkdir(parents=True)
    env = dict(os.environ, PRUNELAB_VAR_DIR=str(VAR), DJANGO_SETTINGS_MODULE="webapp.settings.local")
    for step in (["migrate", "-v", "0"], ["ensure_demo_user"]):
        subprocess.run([sys.executable, "manage.py", *step], cwd=ROOT, env=env, check=True, capture_output=True)
    started = time.perf_counter()
    subprocess.run([sys.executable, "manage.py", "demo_data"], cwd=ROOT, env=env, check=True, capture_output=True)
    ours = time.perf_counter() - started
    record = json.loads((VAR / "demo" / "synth.json").read_text())
    script = (
        "import sys; from pathlib import Path; from defenses.synthetic import build_benchmark; "
        "build_benchmark('demo', Path(sys.argv[1]), with_clean=True)"
    )
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", script, str(VAR / "old")], cwd=ROOT, check=True, capture_output=True)
    old = time.perf_counter() - started
    print(
        f"demo data, generated and imported (ours): {ours:.0f} s ({ours / 60:.1f} min); generation alone "
        f"{record['seconds']:.0f} s"
    )
    print(f"old generation alone (with the clean network): {old:.0f} s; old / ours {old / ours:.2f}x")
    for name, entry in record["badnets"].items():
        asr = ", ".join(f"{trigger} {value:.1f}" for trigger, value in entry["asr"].items())
        print(f"  {name}: CA {entry['ca']:.1f} %, ASR {asr} %")


if __name__ == "__main__":
    main()
