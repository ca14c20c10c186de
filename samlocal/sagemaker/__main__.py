"""Run the local SageMaker as a process.

    python -m samlocal.sagemaker --data-dir .flywheel/sagemaker --port 0

Prints `LOCAL_SAGEMAKER_URL=<url>` once serving; SIGINT/SIGTERM stop it.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading

from . import LocalSageMaker


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m samlocal.sagemaker", description=__doc__)
    p.add_argument("--data-dir", required=True, help="all state lives here; reuse it to resume")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    p.add_argument("--s3-endpoint", default=None, help="default: AWS_ENDPOINT_URL_S3")
    p.add_argument("--events-endpoint", default=None, help="default: AWS_ENDPOINT_URL_EVENTS")
    p.add_argument(
        "--cloudwatch-endpoint", default=None, help="default: AWS_ENDPOINT_URL_CLOUDWATCH"
    )
    p.add_argument("--log-level", default="INFO")
    args = p.parse_args()
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )

    sm = LocalSageMaker(
        args.data_dir,
        host=args.host,
        port=args.port,
        s3_endpoint=args.s3_endpoint,
        events_endpoint=args.events_endpoint,
        cloudwatch_endpoint=args.cloudwatch_endpoint,
    )
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    sm.start()
    print(f"LOCAL_SAGEMAKER_URL={sm.url}", flush=True)
    done.wait()
    sm.stop()


if __name__ == "__main__":
    main()
