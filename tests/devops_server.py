"""A strict, real HTTP implementation of the Azure DevOps endpoints the orchestrator calls, for tests.

It listens on 127.0.0.1 (random port) and implements, with the routes and api-versions of
docs/devops-protocol.md:
- route discovery for the azure-devops SDK: OPTIONS `{collection}/_apis` (the ApiResourceLocation list, with
  route templates that give the documented paths) and GET `_apis/ResourceAreas` (docs/devops-protocol.md#python-sdk-coverage,
  docs/devops-protocol.md#test-client);
- the test API: create/update run, add results, run and result attachments (docs/devops-protocol.md#creating-a-test-run
  to docs/devops-protocol.md#completing-a-run);
- the server task's callback API: plan events, feed, logs, timeline records (docs/devops-protocol.md#task-events to
  docs/devops-protocol.md#timeline-records).

Strict: a wrong Authorization header is 401; a missing, malformed or undocumented api-version (from the
query string or, as the SDK sends it, from `Accept: application/json;api-version=...`) is 400; a body that
breaks the documented model (unknown field, wrong type, a limit exceeded, a state not allowed) is 400 with
a message saying what. Every request is recorded (method, path, query, headers, body) before anything is
checked, and faults can be injected for the next N requests of a route: any status (429 with Retry-After,
500, 401, 203 with an HTML page, ...) or a hang (no answer until the client gives up).

Use the `devops_server` fixture (import it into a test module), or `DevOpsServer(...)` as a context manager.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import pytest

# The azure-devops SDK creates its route cache folder when first imported (default ~/.azure-devops); keep
# the tests out of the home folder. The fixture below also points the cache files at each test's tmp dir.
os.environ.setdefault("AZURE_DEVOPS_CACHE_DIR", os.path.join(tempfile.gettempdir(), "orchestrator-tests-azure-devops"))

# ---- the documented model -------------------------------------------------------------------------------

TEST_AREA_ID = "c2aa639c-3ccc-4740-b3b6-ce2a1e1d984e"
OUTCOMES = {"Unspecified", "None", "Passed", "Failed", "Inconclusive", "Timeout", "Aborted", "Blocked",
            "NotExecuted", "Warning", "Error", "NotApplicable", "Paused", "InProgress", "NotImpacted"}
RUN_CREATE_STATES = {"NotStarted", "InProgress", "Waiting"}
RUN_UPDATE_STATES = {"NotStarted", "InProgress", "Completed", "Aborted", "Waiting"}
ATTACHMENT_TYPES = {"GeneralAttachment", "AfnStrip", "BugFilingData", "CodeCoverage", "IntermediateCollectorData",
                    "RunConfig", "TestImpactDetails", "TmiTestRunDeploymentFiles",
                    "TmiTestRunReverseDeploymentFiles", "TmiTestResultDetail", "TmiTestRunSummary", "ConsoleLog"}
TASK_RESULTS = {"succeeded", "succeededwithissues", "failed", "canceled", "skipped", "abandoned"}
RUN_CREATE_FIELDS = {
    "automated", "build", "buildDropLocation", "buildFlavor", "buildPlatform", "buildReference", "comment",
    "completeDate", "configurationIds", "controller", "customTestFields", "dtlAutEnvironment",
    "dtlTestEnvironment", "dueDate", "environmentDetails", "errorMessage", "filter", "iteration", "name", "owner",
    "pipelineReference", "plan", "pointIds", "releaseEnvironmentUri", "releaseReference", "releaseUri",
    "runSummary", "runTimeout", "sourceWorkflow", "startDate", "state", "tags", "testConfigurationsMapping",
    "testEnvironmentId", "testSettings", "type"}
RUN_UPDATE_FIELDS = {
    "build", "buildDropLocation", "buildFlavor", "buildPlatform", "comment", "completedDate", "controller",
    "deleteInProgressResults", "dtlAutEnvironment", "dtlEnvironment", "dtlEnvironmentDetails", "dueDate",
    "errorMessage", "iteration", "logEntries", "name", "releaseEnvironmentUri", "releaseUri", "runSummary",
    "sourceWorkflow", "startedDate", "state", "substate", "tags", "testEnvironmentId", "testSettings"}
RESULT_TEXT_LIMITS = {"stackTrace": 1000, "comment": 1000}  # "maxSize= 1000 chars" (SDK docstrings)
FEED_MAX_LINES, FEED_MAX_CHARS = 100, 1024                 # the agent's limits (docs/devops-protocol.md#live-feed)
MAX_ATTACHMENT_BYTES = 75 * 1024 ** 2                       # the agent's limit (docs/devops-protocol.md#attachments)

# location id -> (area, resourceName, routeTemplate, resourceVersion): what OPTIONS {collection}/_apis lists.
LOCATIONS = {
    "e81700f7-3be2-46de-8624-2eb35882fcaa": ("Location", "ResourceAreas", "_apis/{resource}/{areaId}", 1),
    "cadb3810-d47d-4a3c-a234-fe5f3be50138": ("Test", "runs", "{project}/_apis/test/{resource}/{runId}", 3),
    "4637d869-3a76-4468-8057-0bb02aa385cf": ("Test", "results",
                                             "{project}/_apis/test/Runs/{runId}/{resource}/{testCaseResultId}", 6),
    "4f004af4-a507-489c-9b13-cb62060beb11": ("Test", "attachments",
                                             "{project}/_apis/test/Runs/{runId}/{resource}/{attachmentId}", 1),
    "2bffebe9-2f0f-4639-9af8-56129e9fed2d": ("Test", "attachments",
                                             "{project}/_apis/test/Runs/{runId}/Results/{testCaseResultId}/{resource}/{attachmentId}", 1),
    "557624af-b29e-4c20-8ab0-0399d2204f3f": ("distributedtask", "events",
                                             "{scopeIdentifier}/_apis/{area}/hubs/{hubName}/plans/{planId}/{resource}", 1),
    "46f5667d-263a-4684-91b1-dff7fdcf64e2": ("distributedtask", "logs",
                                             "{scopeIdentifier}/_apis/{area}/hubs/{hubName}/plans/{planId}/{resource}/{logId}", 1),
    "8893bc5b-35b2-4be7-83cb-99e683551db4": ("distributedtask", "records",
                                             "{scopeIdentifier}/_apis/{area}/hubs/{hubName}/plans/{planId}/timelines/{timelineId}/{resource}", 1),
    "858983e4-19bd-4c5e-864c-507b59b58b12": ("distributedtask", "feed",
                                             "{scopeIdentifier}/_apis/{area}/hubs/{hubName}/plans/{planId}/timelines/{timelineId}/records/{recordId}/{resource}", 1),
}

_SEG = r"(?P<{}>[^/]+)"
_PLAN = r"/(?P<project>[^/]+)/_apis/distributedtask/hubs/(?P<hub>[^/]+)/plans/(?P<plan>[^/]+)"
_RUN = r"/(?P<project>[^/]+)/_apis/test/runs/(?P<run>\d+)"


@dataclass(frozen=True)
class Route:
    name: str
    method: str
    pattern: re.Pattern[str]
    versions: frozenset[str] | None  # None: no api-version needed (OPTIONS)
    body: str = "json"               # json | bytes | none


def _route(name: str, method: str, path: str, versions: set[str] | None, body: str = "json") -> Route:
    return Route(name, method, re.compile(f"^{path}/?$", re.IGNORECASE),
                 frozenset(versions) if versions is not None else None, body)


ROUTES = [
    _route("options", "OPTIONS", r"/_apis", None, "none"),
    _route("resource_areas", "GET", r"/_apis/resourceareas(?:/(?P<area>[^/]+))?", {"7.1-preview.1"}, "none"),
    _route("runs.create", "POST", r"/(?P<project>[^/]+)/_apis/test/runs", {"7.1", "7.1-preview.3"}),
    _route("runs.update", "PATCH", _RUN, {"7.1", "7.1-preview.3"}),
    _route("runs.get", "GET", _RUN, {"7.1", "7.1-preview.3"}, "none"),
    _route("results.add", "POST", _RUN + r"/results", {"7.1", "7.1-preview.6"}),
    _route("attachments.run", "POST", _RUN + r"/attachments", {"7.1", "7.1-preview.1"}),
    _route("attachments.result", "POST", _RUN + r"/results/(?P<result>\d+)/attachments", {"7.1", "7.1-preview.1"}),
    _route("events", "POST", _PLAN + r"/events", {"2.0-preview.1", "7.1-preview.1"}),
    _route("feed", "POST", _PLAN + r"/timelines/(?P<timeline>[^/]+)/records/(?P<record>[^/]+)/feed",
           {"4.1", "7.1-preview.1", "7.2-preview.1"}),
    _route("logs.create", "POST", _PLAN + r"/logs", {"4.1", "7.1-preview.1"}),
    _route("logs.append", "POST", _PLAN + r"/logs/(?P<log>\d+)", {"4.1", "7.1-preview.1"}, "bytes"),
    _route("records.get", "GET", _PLAN + r"/timelines/(?P<timeline>[^/]+)/records", {"4.1", "7.1-preview.1"}, "none"),
    _route("records.update", "PATCH", _PLAN + r"/timelines/(?P<timeline>[^/]+)/records", {"4.1", "7.1-preview.1"}),
]


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    route: str | None = None
    status: int | None = None
    fault: str | None = None

    @property
    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8"))

    def header(self, name: str) -> str | None:
        for key, value in self.headers.items():
            if key.lower() == name.lower():
                return value
        return None


@dataclass
class Fault:
    status: int | None = None        # None with hang=True: no answer
    retry_after: str | None = None
    hang: bool = False
    after: bool = False              # with hang: process the request, then lose the answer
    body: str | None = None


class BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _require(condition: bool, message: str, status: int = 400) -> None:
    if not condition:
        raise BadRequest(status, message)


def _iso(value: Any, name: str) -> datetime:
    _require(isinstance(value, str), f"{name} must be an ISO 8601 string")
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(400, f"{name} is not an ISO 8601 date: {value!r}") from None


def _only(body: dict[str, Any], allowed: set[str], what: str) -> None:
    unknown = sorted(set(body) - allowed)
    _require(not unknown, f"{what}: unknown field(s) {unknown}")


@dataclass
class Plan:
    hub: str
    timeline_id: str
    job_id: str
    task_id: str
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    logs: dict[int, dict[str, Any]] = field(default_factory=dict)


class DevOpsServer:
    """One organisation, one project, one server job (plan/timeline/job/task), and the test runs made."""

    def __init__(self, token: str = "test-token", *, hub: str = "build", org: str = "org",
                 project_name: str = "proj", hang_s: float = 10.0,
                 max_attachment_bytes: int = MAX_ATTACHMENT_BYTES) -> None:
        self.token = token
        self.org = org
        self.project_id = str(uuid.uuid4())
        self.project_name = project_name
        self.plan_id, self.timeline_id = str(uuid.uuid4()), str(uuid.uuid4())
        self.job_id, self.task_id = str(uuid.uuid4()), str(uuid.uuid4())
        self.hang_s = hang_s
        self.max_attachment_bytes = max_attachment_bytes
        self.requests: list[Recorded] = []
        self.test_area_url: str | None = None  # where _apis/ResourceAreas says the test API lives (default: here)
        self.runs: dict[int, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self._faults: dict[str, list[Fault]] = {}
        self._lock = threading.RLock()
        self._release = threading.Event()
        self._ids = iter(range(1, 10 ** 9))
        self.plan = Plan(hub=hub, timeline_id=self.timeline_id, job_id=self.job_id, task_id=self.task_id)
        self.plan.records[self.job_id] = {"id": self.job_id, "type": "Job", "name": "kick_off",
                                          "state": "inProgress", "result": None, "parentId": None}
        self.plan.records[self.task_id] = {"id": self.task_id, "type": "Task", "name": "PublishToAzureServiceBus",
                                           "state": "inProgress", "result": None, "parentId": self.job_id,
                                           "log": None}
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.01},
                                        name="devops-server", daemon=True)

    # ---- lifecycle and set-up --------------------------------------------------------------------------

    @property
    def host(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    @property
    def url(self) -> str:
        """The collection URL (PlanUrl / System.CollectionUri), with a trailing slash as DevOps gives it."""
        return f"{self.host}/{self.org}/"

    def start(self) -> DevOpsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> DevOpsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def message_properties(self, **overrides: Any) -> dict[str, Any]:
        """The application properties PublishToAzureServiceBus@1 attaches (docs/devops-protocol.md#message-properties)."""
        props: dict[str, Any] = {
            "PlanUrl": self.url, "ProjectId": self.project_id, "HubName": self.plan.hub, "PlanId": self.plan_id,
            "JobId": self.job_id, "TimelineId": self.timeline_id, "TaskInstanceName": "PublishToAzureServiceBus",
            "TaskInstanceId": self.task_id, "AuthToken": self.token}
        props.update(overrides)
        return props

    def fail(self, route: str, status: int, *, times: int = 1, retry_after: str | float | None = None,
             body: str | None = None) -> None:
        """Answer the next `times` requests of `route` (a route name, or "*") with `status`."""
        self._check_route_name(route)
        with self._lock:
            self._faults.setdefault(route, []).extend(
                Fault(status=status, retry_after=None if retry_after is None else str(retry_after), body=body)
                for _ in range(times))

    def hang(self, route: str, *, times: int = 1, after_processing: bool = False) -> None:
        """Never answer the next `times` requests of `route` (until hang_s passes or the server stops).
        after_processing: apply the request first, then lose the answer (the ambiguous case for a client)."""
        self._check_route_name(route)
        with self._lock:
            self._faults.setdefault(route, []).extend(Fault(hang=True, after=after_processing) for _ in range(times))

    def cancel_job(self) -> None:
        """What a user cancelling the pipeline (or its timeout) does to the timeline."""
        with self._lock:
            for record in self.plan.records.values():
                if record["state"] != "completed":
                    record.update(state="completed", result="canceled")

    @staticmethod
    def _check_route_name(route: str) -> None:
        if route != "*" and route not in {r.name for r in ROUTES}:
            raise ValueError(f"unknown route {route!r}")

    # ---- what tests read -------------------------------------------------------------------------------

    def calls(self, route: str) -> list[Recorded]:
        """Requests of `route` that the server accepted (2xx), in order."""
        with self._lock:
            return [r for r in self.requests if r.route == route and r.status is not None and 200 <= r.status < 300]

    def attempts(self, route: str) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.route == route]

    def task_completed_events(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e["name"] == "TaskCompleted"]

    def task_record(self) -> dict[str, Any]:
        return self.plan.records[self.task_id]

    def log_text(self, log_id: int) -> str:
        return bytes(self.plan.logs[log_id]["content"]).decode("utf-8")

    # ---- HTTP -------------------------------------------------------------------------------------------

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def _any(self) -> None:
                server._serve(self)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = do_OPTIONS = _any

        return Handler

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(handler.path)
        body = _read_body(handler)
        record = Recorded(method=handler.command, path=unquote(parts.path),
                          query=dict(parse_qsl(parts.query, keep_blank_values=True)),
                          headers={k: v for k, v in handler.headers.items()}, body=body)
        with self._lock:
            self.requests.append(record)
        try:
            status, payload, headers = self._dispatch(record)
        except BadRequest as exc:
            status, payload, headers = exc.status, {"$id": "1", "message": exc.message,
                                                    "typeKey": "InvalidRequestException"}, {}
        except _Hang:
            record.fault = record.fault or "hang"
            self._release.wait(self.hang_s)
            return  # the connection closes with no answer
        record.status = status
        _respond(handler, status, payload, headers)

    def _dispatch(self, rec: Recorded) -> tuple[int, Any, dict[str, str]]:
        prefix = f"/{self.org}"
        if not rec.path.lower().startswith(prefix.lower() + "/"):
            raise BadRequest(404, f"no organisation at {rec.path}")
        path = rec.path[len(prefix):]
        route, match, known = _match(rec.method, path)
        rec.route = route.name if route else None
        if not self._authorized(rec.header("Authorization")):
            raise BadRequest(401, "TF400813: the user is not authorized to access this resource")
        if route is None or match is None:
            raise BadRequest(405 if known else 404, f"no API at {rec.method} {rec.path}")
        self._check_version(route, rec)
        fault = self._take_fault(route.name)
        if fault is not None and not fault.after:
            rec.fault = "hang" if fault.hang else str(fault.status)
            if fault.hang:
                raise _Hang()
            return _fault_response(fault)
        data = self._parse_body(route, rec)
        handler: Callable[[dict[str, str], Any, Recorded], Any] = getattr(self, "_h_" + route.name.replace(".", "_"))
        with self._lock:
            answer = handler(match.groupdict(), data, rec)
        if fault is not None:  # processed, but the client never hears so
            rec.status, rec.fault = 200, "response lost"
            raise _Hang()
        if isinstance(answer, tuple):
            return answer
        return 200, answer, {}

    def _authorized(self, header: str | None) -> bool:
        """Basic with any user name and the token as password, or Bearer token (docs/devops-protocol.md#callback-base-and-authentication)."""
        if not header:
            return False
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer":
            return value.strip() == self.token
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return decoded.partition(":")[2] == self.token

    @staticmethod
    def _check_version(route: Route, rec: Recorded) -> None:
        if route.versions is None:
            return
        from_query = next((v for k, v in rec.query.items() if k.lower() == "api-version"), None)
        accept = rec.header("Accept") or ""
        found = re.search(r"api-version=([^;,\s]+)", accept)
        from_accept = found.group(1) if found else None
        _require(not (from_query and from_accept and from_query != from_accept),
                 f"api-version {from_query!r} in the query and {from_accept!r} in Accept disagree")
        version = from_query or from_accept
        _require(version is not None, "No api-version was supplied for the request")
        _require(version in route.versions,
                 f"api-version {version!r} is not valid for {route.name}; expected one of {sorted(route.versions)}")

    def _take_fault(self, name: str) -> Fault | None:
        with self._lock:
            for key in (name, "*"):
                queue = self._faults.get(key)
                if queue:
                    return queue.pop(0)
        return None

    @staticmethod
    def _parse_body(route: Route, rec: Recorded) -> Any:
        content_type = (rec.header("Content-Type") or "").split(";")[0].strip().lower()
        if route.body == "none":
            return None
        if route.body == "bytes":
            _require(content_type == "application/octet-stream", "log content must be application/octet-stream")
            return rec.body
        _require(content_type == "application/json", f"expected a JSON body, got Content-Type {content_type!r}")
        try:
            return json.loads(rec.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise BadRequest(400, "the request body is not valid JSON") from None

    # ---- route discovery ---------------------------------------------------------------------------------

    def _h_options(self, match: dict[str, str], data: Any, rec: Recorded) -> Any:
        value = [{"id": lid, "area": area, "resourceName": resource, "routeTemplate": template,
                  "resourceVersion": version, "minVersion": 1.0, "maxVersion": 7.2, "releasedVersion": "7.1"}
                 for lid, (area, resource, template, version) in LOCATIONS.items()]
        return {"count": len(value), "value": value}

    def _h_resource_areas(self, match: dict[str, str], data: Any, rec: Recorded) -> Any:
        areas = [{"id": TEST_AREA_ID, "name": "Test", "locationUrl": self.test_area_url or self.url}]
        if match.get("area"):
            found = [a for a in areas if a["id"] == match["area"].lower()]
            _require(bool(found), f"no resource area {match['area']}", 404)
            return found[0]
        return {"count": len(areas), "value": areas}

    # ---- test runs --------------------------------------------------------------------------------------

    def _project(self, match: dict[str, str]) -> None:
        _require(match["project"].lower() in (self.project_id.lower(), self.project_name.lower()),
                 f"project {match['project']} not found", 404)

    def _run(self, match: dict[str, str]) -> dict[str, Any]:
        self._project(match)
        run = self.runs.get(int(match["run"]))
        _require(run is not None, f"test run {match['run']} not found", 404)
        assert run is not None
        return run

    def _h_runs_create(self, match: dict[str, str], body: Any, rec: Recorded) -> Any:
        self._project(match)
        _require(isinstance(body, dict), "RunCreateModel must be a JSON object")
        _only(body, RUN_CREATE_FIELDS, "RunCreateModel")
        _require(isinstance(body.get("name"), str) and bool(body["name"].strip()), "name is required")
        if "automated" in body:
            _require(isinstance(body["automated"], bool), "automated must be true or false")
        if "state" in body:
            _require(body["state"] in RUN_CREATE_STATES, f"a run cannot be created in state {body['state']!r}")
        for key in ("startDate", "completeDate"):
            if body.get(key) is not None:
                _iso(body[key], key)
        build = body.get("build")
        if build is not None:
            _require(isinstance(build, dict) and str(build.get("id", "")).strip() != "", "build.id is required")
        pipeline = body.get("pipelineReference")
        if pipeline is not None:
            _require(isinstance(pipeline, dict) and build is not None
                     and str(pipeline.get("pipelineId")) == str(build.get("id")),
                     "pipelineReference.pipelineId must equal build.id")
        run_id = next(self._ids)
        url = f"{self.url}{self.project_id}/_apis/test/Runs/{run_id}"
        run = {"id": run_id, "name": body["name"], "url": url,
               "webAccessUrl": f"{self.url}{self.project_name}/_TestManagement/Runs?runId={run_id}",
               "state": body.get("state", "NotStarted"), "isAutomated": body.get("automated", False),
               "build": build, "pipelineReference": pipeline, "created": body, "updates": [], "results": [],
               "attachments": []}
        self.runs[run_id] = run
        return _run_view(run)

    def _h_runs_update(self, match: dict[str, str], body: Any, rec: Recorded) -> Any:
        run = self._run(match)
        _require(isinstance(body, dict), "RunUpdateModel must be a JSON object")
        _only(body, RUN_UPDATE_FIELDS, "RunUpdateModel")
        if "state" in body:
            _require(body["state"] in RUN_UPDATE_STATES, f"unknown run state {body['state']!r}")
        if body.get("completedDate") is not None:
            _iso(body["completedDate"], "completedDate")
        run["updates"].append(body)
        if "state" in body:
            run["state"] = body["state"]
        return _run_view(run)

    def _h_runs_get(self, match: dict[str, str], body: Any, rec: Recorded) -> Any:
        return _run_view(self._run(match))

    def _h_results_add(self, match: dict[str, str], body: Any, rec: Recorded) -> Any:
        run = self._run(match)
        _require(run["state"] not in ("Completed", "Aborted"), "the test run is already completed")
        _require(isinstance(body, list) and 0 < len(body) <= 1000, "expected a list of 1 to 1000 TestCaseResult")
        for index, item in enumerate(body):
            where = f"results[{index}]"
            _require(isinstance(item, dict), f"{where} must be an object")
            _require(item.get("outcome") in OUTCOMES, f"{where}.outcome {item.get('outcome')!r} is not a TestOutcome")
            _require(isinstance(item.get("testCaseTitle"), str) and bool(item["testCaseTitle"]),
                     f"{where}.testCaseTitle is required")
            _require(isinstance(item.get("automatedTestName"), str) and bool(item["automatedTestName"]),
                     f"{where}.automatedTestName is required")
            if "durationInMs" in item:
                _require(isinstance(item["durationInMs"], (int, float)) and item["durationInMs"] >= 0,
                         f"{where}.durationInMs must be a number >= 0")
            for key, limit in RESULT_TEXT_LIMITS.items():
                if item.get(key) is not None:
                    _require(isinstance(item[key], str) and len(item[key]) <= limit,
                             f"{where}.{key} is longer than {limit} characters")
            if item.get("startedDate") is not None or item.get("completedDate") is not None:
                started = _iso(item.get("startedDate"), f"{where}.startedDate")
                completed = _iso(item.get("completedDate"), f"{where}.completedDate")
                _require(completed >= started, f"{where}.completedDate is before startedDate")
        added = []
        for item in body:
            result = {**item, "id": 100000 + len(run["results"]), "testRun": {"id": str(run["id"])},
                      "attachments": []}
            run["results"].append(result)
            added.append({k: v for k, v in result.items() if k != "attachments"})
        return {"count": len(added), "value": added}

    def _attachment(self, body: Any) -> dict[str, Any]:
        _require(isinstance(body, dict), "TestAttachmentRequestModel must be a JSON object")
        _only(body, {"attachmentType", "comment", "fileName", "stream"}, "TestAttachmentRequestModel")
        name = body.get("fileName")
        _require(isinstance(name, str) and bool(name.strip()), "fileName is required")
        _require(not re.search(r"[:/\\\x00-\x1f]", str(name)), f"fileName {name!r} has a character not allowed")
        if body.get("attachmentType") is not None:
            _require(body["attachmentType"] in ATTACHMENT_TYPES, f"unknown attachmentType {body['attachmentType']!r}")
        _require(isinstance(body.get("stream"), str), "stream (base64) is required")
        try:
            content = base64.b64decode(body["stream"], validate=True)
        except binascii.Error:
            raise BadRequest(400, "stream is not valid base64") from None
        _require(len(content) <= self.max_attachment_bytes, "the attachment is too large")
        return {"id": next(self._ids), "fileName": name, "attachmentType": body.get("attachmentType"),
                "comment": body.get("comment"), "content": content}

    def _h_attachments_run(self, match: dict[str, str], body: Any, rec: Recorded) -> Any:
        run = self._run(match)
        attachment = self._attachment(body)
        run["attachments"].append(attachment)
        return {"id": attachment["id"], "url": f"{run['url']}/attachments/{attachment['id']}"}

    def _h_attachments_result(self, match: dict[str, str], body: Any, rec: Recorded) -> Any:
        run = self._run(match)
        results = [r for r in run["results"] if r["id"] == int(match["result"])]
        _require(bool(results), f"test result {match['result']} not found in run {run['id']}", 404)
        attachment = self._attachment(body)
        results[0]["attachments"].append(attachment)
        return {"id": attachment["id"], "url": f"{run['url']}/Results/{match['result']}/attachments/{attachment['id']}"}

    # ---- the server task ----------------------------------------------------------------------------

    def _plan(self, match: dict[str, str]) -> Plan:
        _require(match["project"].lower() == self.project_id.lower() or match["project"].lower() == self.project_name.lower(),
                 f"project {match['project']} not found", 404)
        _require(match["hub"].lower() == self.plan.hub.lower(), f"hub {match['hub']} not found", 404)
        _require(match["plan"].lower() == self.plan_id.lower(), f"plan {match['plan']} not found", 404)
        if "timeline" in match:
            _require(match["timeline"].lower() == self.timeline_id.lower(), f"timeline {match['timeline']} not found", 404)
        return self.plan

    def _h_events(self, match: dict[str, str], body: Any, rec: Recorded) -> Any:
        plan = self._plan(match)
        _require(isinstance(body, dict), "the event must be a JSON object")
        _only(body, {"name", "taskId", "jobId", "result"}, "event")
        name = body.get("name")
        _require(name in ("TaskAssigned", "TaskStarted", "TaskCompleted"), f"unknown event {name!r}")
        _require(str(body.get("jobId", "")).lower() == plan.job_id.lower(), "jobId does not match the job", 404)
        task_id = str(body.get("taskId", "")).lower()
        _require(task_id in plan.records and plan.records[task_id]["type"] == "Task", "taskId is not a task of this job", 404)
        if name == "TaskCompleted":
            _require(str(body.get("result", "")).lower() in TASK_RESULTS, f"unknown result {body.get('result')!r}")
        else:
            _require("result" not in body, f"{name} takes no result")
        self.events.append(body)
        record = plan.records[task_id]
        if name == "TaskStarted" and record["state"] == "pending":
            record["state"] = "inProgress"
        if name == "TaskCompleted" and record["state"] != "completed":
            record.update(state="completed", result=str(body["result"]).lower())
        return 200, None, {}

    def _h_feed(self, match: dict[str, str], body: Any, rec: Recorded) -> Any:
        plan = self._plan(match)
        _require(match["record"].lower() == plan.job_id.lower(), "the feed belongs to the job record (JobId)", 404)
        _require(isinstance(body, dict), "TimelineRecordFeedLinesWrapper must be a JSON object")
        _only(body, {"value", "count", "stepId", "startLine", "endLine"}, "TimelineRecordFeedLinesWrapper")
        lines = body.get("value")
        _require(isinstance(lines, list) and all(isinstance(x, str) for x in lines), "value must be a list of strings")
        _require(body.get("count") == len(lines), "count must equal the number of lines")
        _require(len(lines) <= FEED_MAX_LINES, f"at most {FEED_MAX_LINES} lines per post")
        _require(all(len(x) <= FEED_MAX_CHARS for x in lines), f"a line is longer than {FEED_MAX_CHARS} characters")
        return 200, None, {}

    def _log_view(self, match: dict[str, str], log: dict[str, Any]) -> dict[str, Any]:
        return {"id": log["id"], "path": log["path"], "lineCount": log["content"].count(b"\n"),
                "createdOn": log["created"],
                "location": f"{self.url}{match['project']}/_apis/distributedtask/hubs/{match['hub']}/plans/"
                            f"{match['plan']}/logs/{log['id']}"}

    def _h_logs_create(self, match: dict[str, str], body: Any, rec: Recorded) -> Any:
        plan = self._plan(match)
        _require(isinstance(body, dict), "TaskLog must be a JSON object")
        _only(body, {"path", "id", "location", "createdOn", "lastChangedOn", "lineCount", "indexLocation"}, "TaskLog")
        _require(isinstance(body.get("path"), str) and bool(body["path"]), "path is required")
        log_id = len(plan.logs) + 1
        plan.logs[log_id] = {"id": log_id, "path": body["path"], "content": bytearray(),
                             "created": datetime.now().isoformat()}
        return self._log_view(match, plan.logs[log_id])

    def _h_logs_append(self, match: dict[str, str], body: Any, rec: Recorded) -> Any:
        plan = self._plan(match)
        log = plan.logs.get(int(match["log"]))
        _require(log is not None, f"log {match['log']} not found", 404)
        assert log is not None
        log["content"].extend(body)
        return self._log_view(match, log)

    def _h_records_get(self, match: dict[str, str], body: Any, rec: Recorded) -> Any:
        plan = self._plan(match)
        value = [dict(r) for r in plan.records.values()]
        return {"count": len(value), "value": value}

    def _h_records_update(self, match: dict[str, str], body: Any, rec: Recorded) -> Any:
        plan = self._plan(match)
        _require(isinstance(body, dict) and isinstance(body.get("value"), list),
                 "expected {\"value\": [TimelineRecord], \"count\": n}")
        _only(body, {"value", "count"}, "records")
        _require(body.get("count") == len(body["value"]), "count must equal the number of records")
        updated = []
        for item in body["value"]:
            _require(isinstance(item, dict) and isinstance(item.get("id"), str), "each record needs an id")
            if "log" in item and item["log"] is not None:
                reference = item["log"]
                if isinstance(reference, str):  # crank and the C# sample send the TaskLog as JSON text
                    try:
                        reference = json.loads(reference)
                    except ValueError:
                        raise BadRequest(400, "log is neither a TaskLogReference nor its JSON") from None
                _require(isinstance(reference, dict) and isinstance(reference.get("id"), int)
                         and reference["id"] in plan.logs, "log must reference a log of this plan")
                item = {**item, "log": {"id": reference["id"], "location": reference.get("location")}}
            record = plan.records.setdefault(item["id"].lower(), {"id": item["id"], "state": "pending"})
            record.update(item)
            updated.append(dict(record))
        return {"count": len(updated), "value": updated}


class _Hang(Exception):
    pass


def _match(method: str, path: str) -> tuple[Route | None, re.Match[str] | None, bool]:
    """(route, match, whether some route has this path): the last tells 405 from 404."""
    known = False
    for route in ROUTES:
        found = route.pattern.match(path)
        if found is None:
            continue
        if route.method == method:
            return route, found, True
        known = True
    return None, None, known


def _run_view(run: dict[str, Any]) -> dict[str, Any]:
    return {k: run[k] for k in ("id", "name", "url", "webAccessUrl", "state", "isAutomated", "build",
                                "pipelineReference")}


def _fault_response(fault: Fault) -> tuple[int, Any, dict[str, str]]:
    assert fault.status is not None
    headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
    if fault.status == 203:
        return 203, _Html(fault.body or "<html><body>Sign in to your account</body></html>"), headers
    return fault.status, {"$id": "1", "message": fault.body or f"injected fault {fault.status}"}, headers


class _Html(str):
    pass


def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        chunks = bytearray()
        while True:
            size = int(handler.rfile.readline().strip().split(b";")[0] or b"0", 16)
            if size == 0:
                handler.rfile.readline()
                return bytes(chunks)
            chunks.extend(handler.rfile.read(size))
            handler.rfile.readline()
    length = int(handler.headers.get("Content-Length") or 0)
    return handler.rfile.read(length) if length else b""


def _respond(handler: BaseHTTPRequestHandler, status: int, payload: Any, headers: dict[str, str]) -> None:
    if isinstance(payload, _Html):
        data, content_type = payload.encode("utf-8"), "text/html; charset=utf-8"
    elif payload is None:
        data, content_type = b"", None
    else:
        data, content_type = json.dumps(payload).encode("utf-8"), "application/json; charset=utf-8"
    try:
        handler.send_response(status)
        if content_type:
            handler.send_header("Content-Type", content_type)
        for key, value in headers.items():
            handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)
    except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout test)
        pass


class AttackerServer:
    """A second server on 127.0.0.1, playing a host the sender of a forged message chose: it answers every
    request with 200 and `{}`, and keeps what it received (nothing, when the allow-list works)."""

    def __init__(self) -> None:
        self.received: list[tuple[str, str, dict[str, str]]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def _any(self) -> None:
                owner.received.append((self.command, self.path, dict(self.headers.items())))
                _read_body(self)
                _respond(self, 200, {}, {})

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _any

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.01},
                                        name="attacker-server", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/org/"

    def __enter__(self) -> AttackerServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture
def devops_server(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevOpsServer]:
    """A started strict server, with the azure-devops SDK's route caches (in memory and on disk) emptied
    so each test sees the SDK discover routes from scratch and nothing lands in the user's home."""
    isolate_sdk_caches(monkeypatch, tmp_path_factory.mktemp("azure-devops-cache"))
    allow_loopback(monkeypatch)
    server = DevOpsServer(token="tok-" + uuid.uuid4().hex)
    with server:
        yield server


def allow_loopback(monkeypatch: pytest.MonkeyPatch, origin: str = "http://127.0.0.1") -> None:
    """The strict server listens on plain http on 127.0.0.1, which only the setting allows (devops/hosts.py)."""
    monkeypatch.setenv("ORCHESTRATOR_DEVOPS_HOSTS", origin)


def isolate_sdk_caches(monkeypatch: pytest.MonkeyPatch, folder: Any) -> None:
    from azure.devops import _file_cache
    from azure.devops.client import Client

    folder.mkdir(parents=True, exist_ok=True)

    for cache in (_file_cache.OPTIONS_CACHE, _file_cache.RESOURCE_CACHE):
        monkeypatch.setattr(cache, "file_name", str(folder / f"{id(cache)}.json"))
        monkeypatch.setattr(cache, "data", {})
        monkeypatch.setattr(cache, "initial_load_occurred", False)
    monkeypatch.setattr(Client, "_locations_cache", {})
