"""The investigator's report: one self-contained HTML file per session.

``write_report(events, media_path, out_html, audio_path=None)`` and
``write_report_for_replay(events_path_or_list, ...)`` (what ``dfmon replay --report`` and
``dfmon report`` call). See :mod:`monitor.report.builder` for what the report shows.
"""

from monitor.report.attribution import AttributionOptions
from monitor.report.builder import write_report, write_report_for_replay

__all__ = ["AttributionOptions", "write_report", "write_report_for_replay"]
