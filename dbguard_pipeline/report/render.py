"""Reports from one AuditResult: text for people (:mod:`.grouped`, the scalable default of ``validate``, or
the sectioned tour of :mod:`.text` that ``dbguard demo`` prints), json (:mod:`.json`), sarif for GitHub code
scanning (:mod:`.sarif`), junit for CI (:mod:`.junit`), github workflow annotations (:mod:`.github`) and
markdown for a pull-request comment or the job summary (:mod:`.markdown`).

Nothing here reads the database or a DSN: no password can reach a report.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from dbguard_pipeline.errors import DbguardError
from dbguard_pipeline.report.json import dumps, render_json
from dbguard_pipeline.text import use_color

if TYPE_CHECKING:
    from dbguard_pipeline.audit.run import AuditResult

FORMATS = ("text", "json", "sarif", "junit", "github", "markdown")


def render(
    result: AuditResult,
    fmt: str = "text",
    *,
    fail_on: str = "critical",
    color: Optional[bool] = None,
    group_by: Optional[str] = None,
    verbose: bool = False,
    quiet: bool = False,
    config_source: Optional[str] = None,
) -> str:
    """The report as a string. ``color=None``: colour when standard output is a terminal (and NO_COLOR is
    not set). Text: ``group_by`` "rule" or "table" gives the grouped report, None the sectioned one."""
    if fmt == "text":
        if color is None:
            color = use_color("auto")
        if group_by is None:
            from dbguard_pipeline.report.text import render_text

            return render_text(result, color=color, fail_on=fail_on)
        from dbguard_pipeline.report.grouped import render_grouped

        return render_grouped(
            result,
            color=color,
            fail_on=fail_on,
            group_by=group_by,
            verbose=verbose,
            quiet=quiet,
            config_source=config_source,
        )
    if fmt == "json":
        if config_source is None:
            return render_json(result)
        return dumps({**result.to_json_dict(), "config": config_source})
    # each writer is imported when its format is asked for (the junit one loads an XML library)
    if fmt == "sarif":
        from dbguard_pipeline.report.sarif import to_sarif

        doc = to_sarif(result)
        if config_source is not None:
            doc["runs"][0]["properties"]["config"] = config_source
        return dumps(doc)
    if fmt == "junit":
        from dbguard_pipeline.report.junit import audit_junit

        return audit_junit(result, fail_on=fail_on)
    if fmt == "github":
        from dbguard_pipeline.report.github import render_github

        return render_github(result, fail_on=fail_on)
    if fmt == "markdown":
        from dbguard_pipeline.report.markdown import render_markdown

        return render_markdown(result, fail_on=fail_on, config_source=config_source)
    raise DbguardError(f"unknown report format {fmt!r} (choose from {', '.join(FORMATS)})")
