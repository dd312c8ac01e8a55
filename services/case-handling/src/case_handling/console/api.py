"""Routes: the staff case console's page at ``/console/`` (issue 26, section 2).

One page folder (``static/``): ``index.html``, ``console.js``, ``console.css``, its
dictionaries, the manifest and the service worker that make it installable. The queue is
``/console/`` and a case ``/console/cases/<case_id>`` (the notifier's alerts link there):
client-side routes answered with ``index.html``. The page talks only to this service's API,
signed in by the shared browser session (``/session``, cookies and CSRF).
"""

from __future__ import annotations

from pathlib import Path

from casebridge_shared.screens import page_router

STATIC = Path(__file__).parent / "static"

router = page_router("/console", STATIC, tags=("staff console",))
