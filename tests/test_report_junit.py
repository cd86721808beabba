"""junit.xml: what JUnit readers (junitparser, an XSD, the Azure DevOps agent's rules) see for each status."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from orchestrator.report import write_junit
from orchestrator.report.junit import MESSAGE_LIMIT, TRACEBACK_LIMIT
from orchestrator.results import RunResults
from tests.report_builders import every_status, iso, step_result

junitparser = pytest.importorskip("junitparser")
xmlschema = pytest.importorskip("xmlschema")

XSD = Path(__file__).parent / "data" / "junit.xsd"
XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x1b]")


def results_for(steps: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    return {"schema": 1, "run_id": "r1", "backend": "local", "experiment": "demo-notebooks", "status": "failed",
            "started_at": iso(0), "finished_at": iso(25), "steps": steps, **fields}


def write(tmp_path: Path, results: dict[str, Any]) -> Path:
    path = tmp_path / "junit.xml"
    write_junit(RunResults.from_json(results), path)
    return path


def cases_by_name(path: Path) -> dict[str, Any]:
    suite = next(iter(junitparser.JUnitXml.fromfile(str(path))))
    return {case.name: case for case in suite}


def case_properties(path: Path, name: str) -> dict[str, str]:
    case = ET.parse(path).getroot().find(f".//testcase[@name='{name}']")
    assert case is not None
    return {p.get("name", ""): p.get("value", "") for p in case.iterfind("properties/property")}


@pytest.fixture
def junit(tmp_path: Path) -> Path:
    return write(tmp_path, results_for(every_status()))


def test_valid_against_the_junit_schema(junit: Path) -> None:
    xmlschema.XMLSchema(str(XSD)).validate(str(junit))


def test_suite_counts_follow_the_outcome_mapping(junit: Path) -> None:
    xml = junitparser.JUnitXml.fromfile(str(junit))
    suite = next(iter(xml))
    assert suite.name == "demo-notebooks"
    # failed x2 + timed_out are failures; crashed + error are errors; one skipped; two passed.
    assert (suite.tests, suite.failures, suite.errors, suite.skipped) == (8, 3, 2, 1)
    assert suite.time == pytest.approx(25.0)
    # No offset: the DevOps agent reads an offset-less timestamp as UTC.
    assert suite.timestamp == "2026-11-26T10:00:00"
    root = ET.parse(junit).getroot()
    assert (root.tag, root.get("tests"), root.get("failures"), root.get("errors")) == ("testsuites", "8", "3", "2")


def test_classname_is_the_folder_with_dots_and_name_the_file(junit: Path) -> None:
    cases = cases_by_name(junit)
    assert cases["01_train.ipynb"].classname == "examples.models"
    assert cases["00_prepare.ipynb"].classname == "examples"
    assert cases["readme.ipynb"].classname == "notebooks"
    assert cases["01_train.ipynb"].time == pytest.approx(12.5)


def test_a_failed_cell_is_a_failure_with_the_exception(junit: Path) -> None:
    case = cases_by_name(junit)["01_train.ipynb"]
    [result] = case.result
    assert isinstance(result, junitparser.Failure)
    assert result.message == "ValueError: bad"
    assert result.type == "ValueError"
    assert "Stopped at cell 7" in result.text
    assert "----> 2 raise ValueError('bad')" in result.text  # ANSI colours gone, text kept
    assert case.system_out == "epoch 1/1\nloss 0.7\n"


def test_an_expectation_miss_lists_the_missed_metric_with_its_actual_value(junit: Path) -> None:
    [result] = cases_by_name(junit)["02_eval.ipynb"].result
    assert isinstance(result, junitparser.Failure)
    assert result.type == "ExpectationMissed"
    assert result.message == "expectation missed: accuracy = 0.81, expected >= 0.9"
    assert "loss: actual 0.4, rule <= 0.5: ok" in result.text


def test_timeout_is_a_failure_of_type_timeout(junit: Path) -> None:
    [result] = cases_by_name(junit)["03_slow.ipynb"].result
    assert isinstance(result, junitparser.Failure)
    assert result.type == "Timeout"
    assert result.message == "CellTimeoutError: cell exceeded 30s"


@pytest.mark.parametrize(("name", "etype"),
                         [("04_crash.ipynb", "DeadKernelError"), ("05_broken.ipynb", "NotJSONError")])
def test_crashed_and_error_are_errors(junit: Path, name: str, etype: str) -> None:
    [result] = cases_by_name(junit)[name].result
    assert isinstance(result, junitparser.Error)
    assert result.type == etype


def test_skipped_carries_the_reason(junit: Path) -> None:
    [result] = cases_by_name(junit)["wip.ipynb"].result
    assert isinstance(result, junitparser.Skipped)
    assert result.message == "work in progress"


def test_passed_has_no_outcome_element(junit: Path) -> None:
    assert cases_by_name(junit)["00_prepare.ipynb"].is_passed


def test_metrics_parameters_and_expectations_are_testcase_properties(junit: Path) -> None:
    props = case_properties(junit, "02_eval.ipynb")
    assert props["metric.accuracy"] == "0.81"
    assert props["expectation.accuracy"] == ">= 0.9 (actual 0.81: missed)"
    assert props["output_notebook"] == "steps/examples_models_02_eval/02_eval.ipynb"
    train = case_properties(junit, "01_train.ipynb")
    assert (train["parameter.epochs"], train["parameter.lr"]) == ("1", "0.01")
    assert train["warning"] == "parameter 'lr' is not declared"


def test_characters_invalid_in_xml_are_stripped(junit: Path) -> None:
    text = junit.read_text(encoding="utf-8")
    assert not XML_INVALID.search(text)
    assert "\\x1b" not in text and "[0;31m" not in text
    ET.parse(junit)  # a strict XML 1.0 parser accepts it


def test_very_long_tracebacks_and_messages_are_cut_with_a_note(tmp_path: Path) -> None:
    huge = "frame line\n" * 20_000 + "RecursionError: maximum recursion depth exceeded"
    step = step_result("deep.ipynb", "failed", error={"kind": "cell_error", "cell_index": 0, "ename": "RecursionError",
                                                      "evalue": "x" * 5000, "traceback": huge})
    path = write(tmp_path, results_for([step]))
    [result] = cases_by_name(path)["deep.ipynb"].result
    assert len(result.message) <= MESSAGE_LIMIT
    assert len(result.text) <= TRACEBACK_LIMIT + 100  # + the note
    assert "characters cut; full text in steps/deep/deep.ipynb" in result.text
    assert result.text.endswith("RecursionError: maximum recursion depth exceeded")  # the tail is kept


def test_partial_results_never_break_the_writer(tmp_path: Path) -> None:
    steps: list[Any] = [
        {},  # nothing at all
        {"step": "a", "status": "running", "notebook": "a.ipynb", "started_at": iso(1), "finished_at": None},
        {"step": "b", "notebook": "b.ipynb", "status": "failed", "error": "not an object", "duration_s": "12"},
        {"step": "c", "notebook": "c.ipynb", "status": "passed", "started_at": "yesterday", "metrics": [1, 2]},
        {"step": "d", "notebook": "dir.v2/d.ipynb", "status": "error", "error": {"kind": "interrupted"}},
        "not a step",
    ]
    path = write(tmp_path, {"schema": 1, "steps": steps, "status": "running", "started_at": None})
    xmlschema.XMLSchema(str(XSD)).validate(str(path))
    cases = cases_by_name(path)
    [running] = cases["a.ipynb"].result
    assert isinstance(running, junitparser.Error) and running.type == "NotFinished"
    [interrupted] = cases["d.ipynb"].result
    assert isinstance(interrupted, junitparser.Error) and interrupted.type == "Interrupted"
    assert cases["d.ipynb"].classname == "dir_v2"  # a dot in a folder name is not a package separator
    assert isinstance(cases["b.ipynb"].result[0], junitparser.Failure)


def test_an_empty_run_is_a_valid_empty_suite(tmp_path: Path) -> None:
    path = write(tmp_path, results_for([]))
    xmlschema.XMLSchema(str(XSD)).validate(str(path))
    suite = next(iter(junitparser.JUnitXml.fromfile(str(path))))
    assert suite.tests == 0


def test_written_atomically(tmp_path: Path) -> None:
    write(tmp_path, results_for(every_status()))
    write(tmp_path, results_for(every_status()))  # overwriting leaves no temporary files behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junit.xml"]
