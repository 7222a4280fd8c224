"""Which recipe wins: a table and a chart of every run of a sweep.

    python src/report.py runs=outputs/multirun/2026-11-25/13-30-33
    python src/report.py 'runs=outputs/runs/2026-11-25/*'          # any run dirs, parents of many, patterns
    python src/report.py 'runs=[outputs/runs/a,outputs/runs/b]'

Keys: conf/report.yaml. Reads each run's metrics.json and composed config; writes report.md and
report.png next to them (src/transferlab/review/report.py). Runs that failed or never finished are
listed as such.
"""

import hydra
from omegaconf import DictConfig

from transferlab.errors import one_line_errors, require_keys, run_app


@hydra.main(version_base="1.3", config_path="../conf", config_name="report")
@one_line_errors
def main(cfg: DictConfig) -> None:
    require_keys(cfg, "src/report.py")
    from transferlab.review.report import report  # matplotlib: only once the command line is good

    written = report(cfg.runs)
    print(written.read_text())
    print(f"wrote {written} and {written.with_name('report.png')}")


if __name__ == "__main__":
    run_app(main)
