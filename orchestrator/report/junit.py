"""junit.xml: one <testcase> per notebook, for Azure DevOps PublishTestResults@2 and any JUnit reader.

What the DevOps agent's JUnit reader does with it (azure-pipelines-agent,
src/Agent.Worker/TestResults/Legacy/JunitResultReader.cs):
- testcase `name` becomes the test title, `classname` the test storage (container);
- <failure> and <error> both become outcome Failed: `message` -> errorMessage, the element text ->
  stackTrace, and <system-out> becomes the console log (read only for failed tests);
- <skipped> becomes NotExecuted, its `message` the errorMessage;
- the suite `timestamp` is parsed as UTC when it has no offset, and with `time` gives the run's dates.

Outcome mapping, and why:
- failed -> <failure type=ename>: the notebook's own code raised, or a metric missed its expectation (the
  JUnit meaning of failure: the test's assertions said no).
- timed_out -> <failure type="Timeout">: the limit is part of what the plan asks of the notebook, and
  slow notebook code is by far the usual cause; pytest-timeout reports the same way. DevOps shows it as
  Failed either way, so the choice only matters to readers that separate the two (Jenkins, GitLab).
- crashed, error -> <error>: the kernel died or the notebook never started; something unanticipated
  around the test, not an assertion in it.
- skipped -> <skipped message=reason>.
- any other status (a partial record read mid-run: "running") -> <error type="NotFinished">, so a report
  published from a run that died never shows an unfinished notebook as passed.

Validated in tests against the Jenkins xunit-plugin junit-10.xsd, extended only with <properties> inside
<testcase> (where pytest's junit_family=xunit1 puts record_property, and junitparser reads it).
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.report.files import write_atomic
from orchestrator.results import RunResults
from orchestrator.text import clip, one_line, show_value, truncate_middle, truncate_tail, xml_safe
from steps.step_result import StepResult

log = logging.getLogger("orchestrator.report")

# The DevOps test-result API documents 1000 characters for errorMessage-like fields (docs/devops-protocol.md
# 3.3); the agent passes `message` through untouched, so we keep it inside that.
MESSAGE_LIMIT = 1000
# Long enough for any real Python traceback; a runaway one (a recursion, a Spark JVM dump) is cut in the
# middle, keeping the cell that raised and the exception itself. The executed notebook has the rest.
TRACEBACK_LIMIT = 16_000
OUTPUT_LIMIT = 16_000
PROPERTY_LIMIT = 1000
TOP_LEVEL_CLASSNAME = "notebooks"


def write_junit(run: RunResults, path: Path) -> None:
    """Write junit.xml for a (possibly partial) run record, atomically."""
    root = build_junit(run)
    ET.indent(root)
    data = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    write_atomic(path, data)
    log.debug("junit written path=%s tests=%d", path, len(run.steps))


@dataclass(frozen=True)
class TestIdentity:
    """How a notebook is named as a test, by junit.xml and by the orchestrator's own DevOps publishing alike,
    so both land on one test history: the agent's JUnit reader makes testcase `name` both testCaseTitle and
    automatedTestName, and `classname` automatedTestStorage (orchestrator/devops/testrun.py uses these)."""

    name: str
    classname: str


def test_identity(step: StepResult) -> TestIdentity:
    # One line: a newline in a notebook's file name must not split a test title in a CI's results view.
    return TestIdentity(name=xml_safe(one_line(step.file_name)), classname=xml_safe(classname(step)))


def classname(step: StepResult) -> str:
    """The notebook's folder with dots ("examples/models" -> "examples.models").

    JUnit readers split classname on dots into packages, so dots inside a folder name become "_".
    """
    if not step.folder:
        return TOP_LEVEL_CLASSNAME
    return ".".join(one_line(part.replace(".", "_")) for part in step.folder.split("/") if part) or TOP_LEVEL_CLASSNAME


def build_junit(run: RunResults) -> ET.Element:
    cases = [_testcase(step) for step in run.steps]
    failures = sum(1 for case in cases if case.find("failure") is not None)
    errors = sum(1 for case in cases if case.find("error") is not None)
    skipped = sum(1 for case in cases if case.find("skipped") is not None)
    time = run.wall_s if run.wall_s is not None else sum(s.duration_s or 0.0 for s in run.steps)
    counts = {"tests": str(len(cases)), "failures": str(failures), "errors": str(errors)}

    root = ET.Element("testsuites", {"name": _attr(run.title), **counts, "time": _seconds(time)})
    suite = ET.SubElement(root, "testsuite", {"name": _attr(run.title), **counts, "skipped": str(skipped),
                                              "time": _seconds(time)})
    if run.started is not None:
        # No offset: the Ant schema's timestamp has none, and the DevOps reader assumes UTC without one.
        suite.set("timestamp", run.started.strftime("%Y-%m-%dT%H:%M:%S"))
    suite_props = {"run_id": run.run_id, "backend": run.backend, "status": run.status, "repairs": run.repairs}
    _properties(suite, [(k, v) for k, v in suite_props.items() if v is not None])
    suite.extend(cases)
    return root


def _testcase(step: StepResult) -> ET.Element:
    identity = test_identity(step)
    case = ET.Element("testcase", {
        "classname": identity.classname,
        "name": identity.name,
        "time": _seconds(step.duration_s or 0.0),
    })
    _properties(case, _case_properties(step))
    outcome = _outcome(step)
    if outcome is not None:
        case.append(outcome)
    if step.output_tail:
        ET.SubElement(case, "system-out").text = xml_safe(truncate_tail(step.output_tail, OUTPUT_LIMIT))
    return case


def _case_properties(step: StepResult) -> list[tuple[str, Any]]:
    props: list[tuple[str, Any]] = [("step", step.id), ("notebook", step.notebook), ("status", step.status)]
    for key in ("attempts", "target", "environment", "kernel"):
        value = getattr(step, key)
        if value is not None:
            props.append((key, value))
    if step.output_notebook:
        props.append(("output_notebook", f"steps/{step.id}/{step.output_notebook}"))
    if step.carried_over_from:
        props.append(("carried_over_from", step.carried_over_from))
    props += [(f"parameter.{name}", value) for name, value in step.parameters.items()]
    props += [(f"metric.{name}", value) for name, value in step.metrics.items()]
    props += [(f"expectation.{e.metric}", f"{e.rule} (actual {_actual(e.actual)}: "
               f"{'ok' if e.ok else 'missed' if e.ok is False else 'not checked'})") for e in step.expectations]
    props += [("warning", w) for w in step.warnings]
    return props


def _outcome(step: StepResult) -> ET.Element | None:
    if step.status == "passed":
        return None
    if step.status == "skipped":
        return _element("skipped", message=step.reason or "skipped")
    if not step.finished_normally:
        return _element("error", message=f"did not finish (status: {step.status})", type_name="NotFinished")
    tag = "failure" if step.status in ("failed", "timed_out") else "error"
    error = step.error
    if step.status == "failed" and step.missed and (error is None or error.kind in (None, "expectation")):
        message = "expectation missed: " + "; ".join(
            f"{e.metric} = {_actual(e.actual)}, expected {e.rule}" for e in step.missed)
        lines = [f"{e.metric}: actual {_actual(e.actual)}, rule {e.rule}: {'ok' if e.ok else 'MISSED'}"
                 for e in step.expectations]
        return _element(tag, message=message, type_name="ExpectationMissed", text="\n".join(lines))
    fallback = f"notebook {step.status.replace('_', ' ')}"
    if error is None:
        return _element(tag, message=fallback, type_name=_STATUS_TYPES[step.status])
    summary = f"{error.ename}: {error.evalue}" if error.ename and error.evalue else (
        error.evalue or error.ename or fallback)
    where = f"steps/{step.id}/{step.output_notebook}" if step.output_notebook else ""
    body = error.traceback
    if error.cell_index is not None:
        body = f"Stopped at cell {error.cell_index}: {clip(summary, MESSAGE_LIMIT)}\n\n{body}"
    body = truncate_middle(body, TRACEBACK_LIMIT, where)
    type_name = "Timeout" if step.status == "timed_out" else error.type_name
    return _element(tag, message=summary, type_name=type_name, text=body)


# The `type` when a step wrote no error object (an older or foreign step runner).
_STATUS_TYPES = {"failed": "Failure", "timed_out": "Timeout", "crashed": "KernelDied", "error": "Error"}


def _element(tag: str, *, message: str, type_name: str | None = None, text: str = "") -> ET.Element:
    element = ET.Element(tag, {"message": _attr(clip(message, MESSAGE_LIMIT))})
    if type_name is not None:
        element.set("type", _attr(type_name))
    if text.strip():
        element.text = xml_safe(text)
    return element


def _properties(parent: ET.Element, props: list[tuple[str, Any]]) -> None:
    if not props:
        return
    holder = ET.SubElement(parent, "properties")
    for name, value in props:
        value_text = _attr(clip(show_value(value), PROPERTY_LIMIT))
        ET.SubElement(holder, "property", {"name": _attr(name), "value": value_text})


def _actual(value: Any) -> str:
    return "missing" if value is None else show_value(value)  # the notebook never recorded the metric


def _attr(text: str) -> str:
    return xml_safe(text)


def _seconds(value: float) -> str:
    return f"{max(0.0, value):.3f}"
