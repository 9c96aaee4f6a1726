"""The static HTML report for customer success: portfolio, account and model pages.

Public API::

    from pes_ml.report import build_report
"""

from __future__ import annotations

from pes_ml.report.build import build_report

__all__ = ["build_report"]
