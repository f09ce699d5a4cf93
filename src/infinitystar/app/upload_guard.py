"""A script in the page that refuses an oversize upload before it is sent, with a message next to the upload box.

gradio enforces the upload limit on the server (``max_file_size``), which is right for a server, but an upload over
the limit then only leaves a bare red "Error" badge in the upload box. The script below checks the size of a chosen
or dropped file in the browser first: a file over the limit is not sent, and the upload's status line says which file,
how large it is, the limit and what to do (the server-side limit stays, for clients that bypass the page).
"""

from __future__ import annotations

import json

from infinitystar.app.checks import UPLOAD_ERROR_PREFIX

#: the class of the message element the script adds to an upload's status box
GUARD_CLASS = "infinitystar-upload-guard"

_SCRIPT = """
<script>
(() => {
  const LIMITS = %(limits)s;  // upload elem_id -> [status elem_id, max bytes, limit text]
  const PREFIX = %(prefix)s;
  function guard(event, files) {
    const selector = Object.keys(LIMITS).map(k => "#" + k).join(",");
    const root = event.target && event.target.closest && event.target.closest(selector);
    if (!root || !files || !files.length) return;
    const [statusId, maxBytes, limitText] = LIMITS[root.id];
    const status = document.getElementById(statusId);
    const old = status && status.querySelector(".%(cls)s");
    if (old) old.remove();
    const big = Array.from(files).find(f => f.size > maxBytes);
    if (!big) return;
    event.preventDefault();
    event.stopImmediatePropagation();
    if (event.target instanceof HTMLInputElement) event.target.value = "";
    if (status) {
      const note = document.createElement("p");
      note.className = "%(cls)s";
      note.style.color = "var(--error-text-color, #b91c1c)";
      note.textContent = PREFIX + "'" + big.name + "' is " + (big.size / 1048576).toFixed(1) + " MB, larger than the "
        + limitText + " limit of this demo: upload a smaller file (the file was not sent)";
      status.appendChild(note);
    }
  }
  document.addEventListener("change", e => {
    if (e.target instanceof HTMLInputElement && e.target.type === "file") guard(e, e.target.files);
  }, true);
  document.addEventListener("drop", e => guard(e, e.dataTransfer && e.dataTransfer.files), true);
})();
</script>
"""


def upload_guard_script(uploads: dict[str, str], max_bytes: int) -> str:
    """The ``<script>`` for the page's ``<head>``: ``uploads`` maps each upload's elem_id to its status elem_id."""
    limit = f"{max_bytes / 2**20:g} MB"
    limits = {upload: [status, max_bytes, limit] for upload, status in uploads.items()}
    return _SCRIPT % {"limits": json.dumps(limits), "prefix": json.dumps(UPLOAD_ERROR_PREFIX), "cls": GUARD_CLASS}
