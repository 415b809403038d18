"""python -m benchmarks <subject> [options] --out DIR   |   python -m benchmarks compare A.json B.json

Subjects: step (the training step on synthetic data), forward (the network's forward pass and a guided
sampling batch), loader (where the data loader's time goes), trainer (the ImageNet trainer through real
files). Each writes DIR/<subject>.json (harness schema) and prints its figures; ``--cpu-smoke`` runs every
code path on the CPU with tiny sizes in seconds. ``compare`` prints B / A for every figure two results share.
"""
from __future__ import annotations

import argparse
import sys

from benchmarks import _harness as H
from benchmarks import compare, forward, loader, step, trainer

SUBJECTS = {"step": step, "forward": forward, "loader": loader, "trainer": trainer}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    sub = p.add_subparsers(dest="subject", required=True)
    for name, mod in SUBJECTS.items():
        sp = sub.add_parser(name, help=mod.__doc__.splitlines()[0], description=mod.__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
        mod.add_arguments(sp)
        sp.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
        sp.add_argument("--name", default=None, help="result file name (default: the subject)")
        sp.add_argument("--cpu-smoke", action="store_true", help="every code path on the CPU, tiny, seconds")
        sp.add_argument("--out", required=True, help="folder for <name>.json")
    compare.add_arguments(sub.add_parser("compare", help=compare.__doc__.splitlines()[0],
                                         description=compare.__doc__, allow_abbrev=False))
    return p


def main(argv=None) -> int:
    from manifold_lab.checks import ConfigError

    a = parser().parse_args(argv)
    try:
        if a.subject == "compare":
            return compare.run(a)
        mod = SUBJECTS[a.subject]
        if a.threads:
            H.torch.set_num_threads(a.threads)
        if a.cpu_smoke:
            mod.smoke(a)
        config, figures = mod.run(a)
        mod.report(config, figures)
        device = H.torch.device(config.get("device", "cpu"))
        print(f"wrote {H.write_result(a.out, a.subject, config, figures, device, a.name)}")
        return 0
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
