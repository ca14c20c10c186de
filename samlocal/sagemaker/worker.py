"""One model server: the SageMaker PyTorch inference toolkit's handler semantics over HTTP.

Run as a script (not as part of the package) so the model's code lives in its
own interpreter:

    python worker.py --model-dir D --code-dir C --program inference.py --port-file F

Serves GET /ping (200 once model_fn has loaded the model) and POST /invocations
(input_fn -> predict_fn -> output_fn, or transform_fn), one request at a time,
like one TorchServe worker. Errors: an exception carrying `status_code` (the
toolkit's BaseInferenceToolkitError) keeps it; a ValueError raised while decoding
the input is a 400; anything else is a 500. The body of an error is its message.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import io
import json
import os
import sys
import tempfile
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any


class UnsupportedFormatError(Exception):
    status_code = 415

    def __init__(self, content_type: str) -> None:
        super().__init__(f"Content type {content_type} is not supported by this framework.")


# ---- the toolkit's default handlers -------------------------------------------------------


def default_model_fn(model_dir: str) -> Any:
    import torch

    for name in ("model.pth", "model.pt"):
        path = Path(model_dir) / name
        if path.exists():
            try:
                return torch.jit.load(str(path), map_location="cpu").eval()
            except Exception as e:
                raise RuntimeError(
                    "default model_fn only loads TorchScript models; "
                    f"provide model_fn in inference.py ({e})"
                ) from e
    raise FileNotFoundError(
        f"Failed to load model with default model_fn: no model.pth in {model_dir}"
    )


def default_input_fn(data: bytes, content_type: str) -> Any:
    import numpy as np
    import torch

    ct = (content_type or "").split(";")[0].strip()
    if ct == "application/json":
        array = np.array(json.loads(data))
    elif ct == "text/csv":
        array = np.loadtxt(io.StringIO(data.decode()), delimiter=",", ndmin=1)
    elif ct == "application/x-npy":
        array = np.load(io.BytesIO(data), allow_pickle=False)
    else:
        raise UnsupportedFormatError(ct)
    return torch.from_numpy(array)


def default_predict_fn(data: Any, model: Any) -> Any:
    import torch

    with torch.no_grad():
        return model(data)


def default_output_fn(prediction: Any, accept: str) -> Any:
    import numpy as np

    value = prediction.detach().cpu().numpy() if hasattr(prediction, "detach") else prediction
    ct = (accept or "application/json").split(";")[0].strip()
    if ct in ("application/json", "*/*"):
        return json.dumps(value.tolist() if isinstance(value, np.ndarray) else value)
    if ct == "text/csv":
        text = io.StringIO()
        np.savetxt(text, np.atleast_2d(value), delimiter=",", fmt="%s")
        return text.getvalue()
    if ct == "application/x-npy":
        data = io.BytesIO()
        np.save(data, np.asarray(value), allow_pickle=False)
        return data.getvalue()
    raise UnsupportedFormatError(ct)


# ---- loading the user's module -----------------------------------------------------------


def _install_toolkit_shim() -> None:
    """inference.py may import sagemaker_inference's errors, as in the real container;
    provide a minimal stand-in when the toolkit isn't installed."""
    try:
        import sagemaker_inference  # noqa: F401

        return
    except ImportError:
        pass
    shim = Path(tempfile.mkdtemp(prefix="sm-toolkit-shim-")) / "sagemaker_inference"
    shim.mkdir()
    (shim / "__init__.py").write_text("")
    (shim / "errors.py").write_text(
        "class BaseInferenceToolkitError(Exception):\n"
        "    def __init__(self, status_code, message, phrase):\n"
        "        super().__init__(status_code, message, phrase)\n"
        "        self.status_code, self.message, self.phrase = status_code, message, phrase\n"
        "    def __str__(self):\n"
        "        return str(self.message)\n"
        "class GenericInferenceToolkitError(BaseInferenceToolkitError):\n"
        "    def __init__(self, status_code, message=None, phrase=None):\n"
        "        message = message or 'Invalid Request'\n"
        "        super().__init__(status_code, message, phrase or message)\n"
        "class UnsupportedFormatError(BaseInferenceToolkitError):\n"
        "    def __init__(self, content_type, **kwargs):\n"
        "        msg = 'Content type %s is not supported by this framework.' % content_type\n"
        "        super().__init__(415, msg, msg)\n"
    )
    (shim / "content_types.py").write_text(
        "JSON = 'application/json'\nCSV = 'text/csv'\nOCTET_STREAM = 'application/octet-stream'\n"
        "ANY = '*/*'\nNPY = 'application/x-npy'\nNPZ = 'application/x-npz'\n"
        "UTF8_TYPES = [JSON, CSV]\n"
    )
    sys.path.append(str(shim.parent))


def _load_module(code_dir: Path, program: str) -> ModuleType | None:
    path = code_dir / program
    if not path.exists():
        return None
    sys.path.insert(0, str(code_dir))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module


def _call(fn: Any, *args: Any, context: Any = None) -> Any:
    """Handlers may take an extra trailing `context` argument (toolkit >= 2)."""
    try:
        params = inspect.signature(fn).parameters
        if len(params) > len(args):
            return fn(*args, context)
    except (TypeError, ValueError):
        pass
    return fn(*args)


class Handler:
    def __init__(self, module: ModuleType | None, model_dir: str) -> None:
        def pick(name: str, default: Any) -> Any:
            return getattr(module, name, None) or default

        self.model_fn = pick("model_fn", default_model_fn)
        self.input_fn = pick("input_fn", default_input_fn)
        self.predict_fn = pick("predict_fn", default_predict_fn)
        self.output_fn = pick("output_fn", default_output_fn)
        self.transform_fn = getattr(module, "transform_fn", None)
        self.model = _call(self.model_fn, model_dir)
        self.lock = threading.Lock()

    def invoke(self, data: bytes, content_type: str, accept: str) -> tuple[int, bytes, str]:
        with self.lock:
            try:
                if self.transform_fn:
                    result = _call(self.transform_fn, self.model, data, content_type, accept)
                else:
                    try:
                        inp = _call(self.input_fn, data, content_type)
                    except ValueError as e:
                        status = getattr(e, "status_code", 400)
                        return status, _message(e).encode(), "text/plain"
                    pred = _call(self.predict_fn, inp, self.model)
                    result = _call(self.output_fn, pred, accept)
            except Exception as e:
                traceback.print_exc()
                status = getattr(e, "status_code", None)
                if not isinstance(status, int) or not 400 <= status <= 599:
                    status = 500
                return status, _message(e).encode(), "text/plain"
        content = accept
        if isinstance(result, tuple):
            result, content = result[0], result[1]
        if isinstance(result, str):
            result = result.encode()
        return 200, bytes(result), content


def _message(e: BaseException) -> str:
    msg = getattr(e, "message", None)
    return str(msg if msg is not None else e) or type(e).__name__


def _exit_with_parent(every_s: float = 0.5) -> None:
    """End with the local SageMaker that started this server, even when it was killed -9
    (no orphan model server holding memory after a killed stack or demo)."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every_s)
        os._exit(1)

    threading.Thread(target=watch, name="watch-parent", daemon=True).start()


def main() -> None:
    _exit_with_parent()
    p = argparse.ArgumentParser()
    p.add_argument("--model-dir", required=True)
    p.add_argument("--code-dir", required=True)
    p.add_argument("--program", default="inference.py")
    p.add_argument("--port-file", required=True)
    p.add_argument(
        "--default-accept",
        default=os.environ.get("SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT", "application/json"),
    )
    args = p.parse_args()

    _install_toolkit_shim()
    os.chdir(args.code_dir if Path(args.code_dir).is_dir() else args.model_dir)
    module = _load_module(Path(args.code_dir), args.program)
    handler = Handler(module, args.model_dir)
    default_accept = args.default_accept

    class Http(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Kept-alive connections: without TCP_NODELAY the body, written after the headers,
        # waits for the client's delayed ACK (~40 ms a request).
        disable_nagle_algorithm = True

        def log_message(self, fmt: str, *a: Any) -> None:
            pass

        def _reply(self, status: int, body: bytes, ctype: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path == "/ping":
                self._reply(200, b"{}", "application/json")
            else:
                self._reply(404, b"not found", "text/plain")

        def do_POST(self) -> None:
            if self.path != "/invocations":
                self._reply(404, b"not found", "text/plain")
                return
            n = int(self.headers.get("Content-Length") or 0)
            data = self.rfile.read(n)
            accept = self.headers.get("Accept") or default_accept
            if accept == "*/*":
                accept = default_accept
            status, body, ctype = handler.invoke(
                data, self.headers.get("Content-Type") or "", accept
            )
            self._reply(status, body, ctype or default_accept)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Http)
    tmp = args.port_file + ".tmp"
    Path(tmp).write_text(str(server.server_address[1]))
    os.replace(tmp, args.port_file)
    print(f"model server listening on {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
