"""A thin wrapper over label-studio-sdk (>= 2.1, `label_studio_sdk.client.LabelStudio`).

Only what push/pull need, with plain dicts in and out, and every failure turned into one
KibbleError line: variable not set, server unreachable, token rejected, request refused.
The server URL and the API key come from the environment (`LABEL_STUDIO_URL`,
`LABEL_STUDIO_API_KEY`), never from a file in the repository. The key is either a legacy token
(Account & Settings -> Legacy Token) or a personal access token (a JWT refresh token; the SDK
exchanges it for access tokens).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any, TypeVar

from kibble import KibbleError

URL_ENV = "LABEL_STUDIO_URL"
KEY_ENV = "LABEL_STUDIO_API_KEY"
T = TypeVar("T")


def _sdk():
    import logging

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request drowns the task's output
    try:
        import httpx
        from label_studio_sdk.client import LabelStudio
        from label_studio_sdk.core.api_error import ApiError
    except ImportError as err:
        raise KibbleError(f"label-studio-sdk is not installed ({err}); pip install 'kibble[labelstudio]'") from err
    return LabelStudio, ApiError, httpx


class LabelStudioServer:
    """One Label Studio server, reached with one API key."""

    def __init__(self, url: str, api_key: str, timeout: float = 60.0):
        LabelStudio, self._api_error, self._httpx = _sdk()
        self.url = str(url).rstrip("/")
        if not self.url.startswith(("http://", "https://")):
            raise KibbleError(f"{URL_ENV}={url!r} is not an http(s) URL; e.g. export {URL_ENV}=http://localhost:8080")
        self._ls = LabelStudio(base_url=self.url, api_key=str(api_key), timeout=float(timeout), max_retries=0)

    @classmethod
    def from_env(cls, url: str | None = None, api_key: str | None = None, timeout: float = 60.0) -> "LabelStudioServer":
        """The server named by $LABEL_STUDIO_URL with the key in $LABEL_STUDIO_API_KEY (arguments override)."""
        url = url or os.environ.get(URL_ENV, "").strip()
        key = api_key or os.environ.get(KEY_ENV, "").strip()
        if not url:
            raise KibbleError(f"{URL_ENV} is not set; export {URL_ENV}=http://localhost:8080 (your Label Studio server)")
        if not key:
            raise KibbleError(
                f"{KEY_ENV} is not set; export {KEY_ENV}=<token> (Label Studio: Account & Settings -> "
                "Personal Access Token, or Legacy Token)"
            )
        return cls(url, key, timeout)

    # ------------------------------------------------------------------ error handling
    def _call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        try:
            return fn(*args, **kwargs)
        except self._httpx.TransportError as err:
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise KibbleError(
                f"cannot reach Label Studio at {self.url} ({reason}) while trying to {what}; start the server "
                f"or fix {URL_ENV}"
            ) from None
        except self._api_error as err:
            status = err.status_code
            if status in (401, 403):
                raise KibbleError(
                    f"Label Studio at {self.url} refused the API key (HTTP {status}) while trying to {what}; check "
                    f"{KEY_ENV} (a legacy token needs legacy tokens enabled in the organization's settings)"
                ) from None
            raise KibbleError(f"Label Studio at {self.url} could not {what} (HTTP {status}: {_detail(err.body)})") from None

    # ---------------------------------------------------------------------- requests
    def whoami(self) -> dict[str, Any]:
        """The key's user: proves the server is reachable and the key valid."""
        me = self._call("check the API key", self._ls.users.whoami)
        return {"id": me.id, "email": me.email}

    def find_project(self, title: str) -> int | None:
        """Id of the newest project with exactly this title, or None."""
        pager = self._call("list projects", self._ls.projects.list, title=title)
        ids = [p.id for p in self._call("list projects", list, pager) if p.title == title]
        return max(ids) if ids else None

    def project(self, project_id: int) -> dict[str, Any] | None:
        """{id, title, label_config, maximum_annotations} of a project, None when it does not exist (any more)."""
        try:
            p = self._ls.projects.get(int(project_id))
        except self._api_error as err:
            if err.status_code == 404:
                return None
            return self._call(f"read project {project_id}", self._ls.projects.get, int(project_id))  # raises, worded
        except self._httpx.TransportError:
            return self._call(f"read project {project_id}", self._ls.projects.get, int(project_id))
        return {"id": p.id, "title": p.title, "label_config": p.label_config, "maximum_annotations": p.maximum_annotations}

    def create_project(self, title: str, label_config: str, *, description: str = "", instructions: str = "",
                       overlap: int = 1) -> int:
        """A new project; `overlap` annotators per task (Label Studio's `maximum_annotations`)."""
        p = self._call(f"create project {title!r}", self._ls.projects.create, title=title, label_config=label_config,
                       description=description, expert_instruction=instructions, show_instruction=bool(instructions),
                       maximum_annotations=int(overlap), overlap_cohort_percentage=100)
        return int(p.id)

    def update_project(self, project_id: int, **fields: Any) -> None:
        self._call(f"update project {project_id}", self._ls.projects.update, int(project_id), **fields)

    def tasks(self, project_id: int) -> list[dict[str, Any]]:
        """Every task of a project as {id, data}."""
        pager = self._call(f"list the tasks of project {project_id}", self._ls.tasks.list, project=int(project_id),
                           page_size=500)
        return self._call("list tasks", _collect, pager, "Label Studio: reading tasks", "tasks",
                          lambda t: {"id": int(t.id), "data": dict(t.data or {})})

    def import_tasks(self, project_id: int, tasks: list[dict[str, Any]]) -> list[int]:
        """Import tasks (data + predictions); their new ids, in order."""
        if not tasks:
            return []
        out = self._call(f"import {len(tasks)} tasks into project {project_id}", self._ls.projects.import_tasks,
                         int(project_id), request=tasks, return_task_ids=True)
        ids = [int(i) for i in (out.task_ids or [])]
        if len(ids) != len(tasks):
            raise KibbleError(f"Label Studio at {self.url} imported {len(ids)} of {len(tasks)} tasks into project {project_id}; "
                              "check the server log, then push again (already imported tasks are kept)")
        return ids

    def export(self, project_id: int) -> list[dict[str, Any]]:
        """The project's annotated tasks in Label Studio's JSON export format."""
        chunks = self._call(f"export project {project_id}", lambda: _collect(
            self._ls.projects.exports.download_sync(int(project_id), export_type="JSON"), "Label Studio export", "bytes"))
        raw = b"".join(chunks)
        try:
            return json.loads(raw)
        except json.JSONDecodeError as err:
            raise KibbleError(f"Label Studio at {self.url} returned an unreadable export of project {project_id} ({err.msg})") from None

    def local_storages(self, project_id: int) -> list[str]:
        """Folders of the project's Local Files storages (Label Studio serves /data/local-files/ only under them)."""
        items = self._call(f"list the storages of project {project_id}", self._ls.import_storage.local.list, project=int(project_id))
        return [str(s.path) for s in items if getattr(s, "path", None)]

    def add_local_storage(self, project_id: int, path: str, title: str = "kibble images") -> None:
        """Attach a Local Files storage (never synced: kibble imports the tasks) so the images are served."""
        self._call(f"attach local folder {path} to project {project_id} (it must be under the server's "
                   "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT, with LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true)",
                   self._ls.import_storage.local.create, project=int(project_id), path=str(path), title=title,
                   use_blob_urls=False)

    def users(self) -> dict[int, str]:
        """User id -> e-mail, to name annotators in the label history."""
        users = self._call("list users", self._ls.users.list)
        return {int(u.id): str(u.email) for u in users if u.email}


def _collect(items: Any, label: str, unit: str, convert: Callable[[Any], Any] | None = None) -> list:
    """The items of a lazy pager or byte stream, with progress (kibble.progress): one page or chunk
    arrives per request, and a large project's listing or export takes a while."""
    from kibble.progress import Progress

    out = []
    with Progress(label, None, unit) as bar:
        for item in items:
            out.append(convert(item) if convert else item)
            bar.advance(len(item) if unit == "bytes" else 1)
    return out


def _detail(body: Any) -> str:
    if isinstance(body, dict):
        body = body.get("validation_errors") or body.get("detail") or body
    text = json.dumps(body, ensure_ascii=False) if not isinstance(body, str) else body
    text = " ".join(text.split())
    return text[:300] + ("..." if len(text) > 300 else "")
