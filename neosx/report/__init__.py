"""Post-fit report of a hard analysis: pulls, impacts, yields and the Brazil band.

cabinetry and pyhf, run on the analysis' pyhf workspace, give the numbers
(:func:`analysis_report`) and draw the figures (:func:`plot_reports`); a run folder holds
them under ``report/`` (:func:`write_reports`), written by ``neosx evaluate`` and
``neosx run --report``, drawn by ``neosx plot``.

Example::

    import json, neosx.config
    from neosx.report import analysis_report
    workspace = json.load(open("runs/neos_blobs/workspaces/optimised.json"))
    report = analysis_report(workspace, neosx.config.EvaluationConfig())
    report["fit"]["parameters"][0]["pull"], report["brazil"]["expected_limits"][2]
"""

from neosx.report.files import (
    REPORT_DIR,
    discard_stale_reports,
    plot_reports,
    read_reports,
    write_reports,
)
from neosx.report.fit import DATA_FITTED, analysis_report, fit_bounds, fit_results

__all__ = [
    "DATA_FITTED",
    "REPORT_DIR",
    "analysis_report",
    "discard_stale_reports",
    "fit_bounds",
    "fit_results",
    "plot_reports",
    "read_reports",
    "write_reports",
]
