"""Local infrastructure the project starts itself (no Docker engine needed):
Apache Kafka in KRaft combined mode from jars resolved through Maven, and an
S3 endpoint (moto's standalone server).

The jars are cached in ``Settings.cache_dir`` (``$LLMGW_CACHE``, default ``~/.cache/llmgw``); the broker's
data lives in the state directory, so a restarted broker keeps its topics.
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from services.runtime.settings import ROOT, Settings

POM = ROOT / "infra" / "kafka" / "pom.xml"
LOG4J = ROOT / "infra" / "kafka" / "log4j2.properties"


def kafka_jars(cache_dir: Path, progress: Callable[[str], None] | None = None) -> Path:
    """Resolve ``org.apache.kafka:kafka_2.13`` and its runtime dependencies (once, into ``cache_dir``);
    ``progress`` is told when Maven runs (a download on first use)."""
    version = _pom_version()
    digest = hashlib.sha256(POM.read_bytes()).hexdigest()[:10]  # a changed pom is a new cache entry
    out = cache_dir / f"kafka-{version}-{digest}"
    marker = out / ".complete"
    if marker.exists():
        return out
    if shutil.which("mvn") is None:
        raise RuntimeError(
            "Maven (mvn) is needed to resolve the Kafka jars; install it or set KAFKA_BOOTSTRAP_SERVERS"
        )
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    if progress:
        progress(f"kafka: resolving the Kafka {version} jars with Maven into {out} (downloads on first use)")
    cmd = [
        "mvn",
        "-q",
        "-B",
        "-f",
        str(POM),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={tmp}",
        "-DincludeScope=runtime",
    ]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(
            f"resolving Kafka jars with Maven failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
        )
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    marker.write_text(version)
    return out


def _pom_version() -> str:
    text = POM.read_text()
    return text.split("<kafka.version>")[1].split("</kafka.version>")[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_port(
    host: str, port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None, what: str = ""
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(host, port):
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(
                f"{what or 'process'} exited with {proc.returncode} before listening on {port}"
            )
        time.sleep(0.1)
    raise TimeoutError(f"{what or 'process'} not listening on {host}:{port} after {timeout:.0f}s")


def kafka_command(
    state: Path,
    port: int,
    controller_port: int,
    cache_dir: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> tuple[list[str], dict[str, str]]:
    """Write the broker config, format storage on first use, return the java command. The jars
    are cached in ``cache_dir`` (a process's ``Settings.cache_dir``; the default location if none);
    ``progress`` is told of the Maven run and the storage format, when they happen."""
    jars = kafka_jars(cache_dir or Settings().cache_dir, progress)
    data = state / "kafka" / "data"
    data.mkdir(parents=True, exist_ok=True)
    props = state / "kafka" / "server.properties"
    props.write_text(
        "\n".join(
            [
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.voters=1@127.0.0.1:{controller_port}",
                f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
                f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
                "controller.listener.names=CONTROLLER",
                "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                f"log.dirs={data}",
                "num.partitions=1",
                "offsets.topic.replication.factor=1",
                "offsets.topic.num.partitions=12",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "group.initial.rebalance.delay.ms=0",
                "auto.create.topics.enable=false",
                "message.max.bytes=8454144",
                "replica.fetch.max.bytes=8454144",
                "log.flush.interval.messages=9223372036854775807",
                # a single-node broker sharing 2 cores with the services: few threads, less switching
                "num.network.threads=1",
                "num.io.threads=2",
                "background.threads=2",
                "log.cleaner.threads=1",
                "num.recovery.threads.per.data.dir=1",
                "",
            ]
        )
    )
    cp = f"{jars}/*"
    java = shutil.which("java") or "java"
    if not (data / "meta.properties").exists():
        if progress:
            progress(f"kafka: formatting the broker's storage in {data}")
        res = subprocess.run(
            [java, "-cp", cp, "kafka.tools.StorageTool", "format", "-t", _cluster_id(), "-c", str(props)],
            capture_output=True,
            text=True,
        )
        if res.returncode != 0:
            raise RuntimeError(f"formatting Kafka storage failed: {res.stdout}{res.stderr}")
    cmd = [
        java,
        "-Xms256m",
        "-Xmx1g",
        "-XX:+UseSerialGC",
        f"-Dlog4j2.configurationFile={LOG4J}",
        "-Dlog4j.configurationFile=" + str(LOG4J),
        "-cp",
        cp,
        "kafka.Kafka",
        str(props),
    ]
    return cmd, {}


def _cluster_id() -> str:
    """A random cluster id in Kafka's form (URL-safe base64 of 16 bytes). Never one starting
    with ``-``: the storage tool would read it as an option and refuse to format."""
    while (cid := base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")).startswith("-"):
        pass
    return cid


def moto_command(port: int) -> list[str]:
    return [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
