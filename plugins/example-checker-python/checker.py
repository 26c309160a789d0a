#!/usr/bin/python3
"""A keep-vip checker in Python, written from docs/checker-protocol.md.

It knows one check type, `file`: a check passes while the file at its
address exists. It needs Debian's python3-grpcio, python3-protobuf and
python3-cryptography, and the message classes protoc generates from
rpc/keepvip/v1/keepvip.proto next to this file (see the Makefile here):

    protoc -I rpc --python_out=DIR rpc/keepvip/v1/keepvip.proto

The gRPC services are wired by hand with grpc's generic handlers, so no
grpc_tools plugin is needed.
"""

import base64
import datetime
import json
import os
import signal
import struct
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import grpc  # noqa: E402
from concurrent import futures  # noqa: E402
from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # noqa: E402

from keepvip.v1 import keepvip_pb2 as pb  # noqa: E402

COOKIE_KEY = "KEEP_VIP_PLUGIN"
COOKIE_VALUE = "b7c1f0a2-keep-vip-plugin"
APP_PROTOCOL_VERSION = "1"
CORE_PROTOCOL_VERSION = "1"
CHECK_TYPE = "file"

LEVELS = ["trace", "debug", "info", "warn", "error"]
_min_level = LEVELS.index(os.environ.get("KEEPVIP_LOG_LEVEL", "info")) if os.environ.get("KEEPVIP_LOG_LEVEL", "info") in LEVELS else 2
_log_lock = threading.Lock()


def log(level, message, **fields):
    """One JSON line on stderr: the supervisor reads level and message and
    keeps every other key as a field."""
    if LEVELS.index(level) < _min_level:
        return
    line = dict(fields, level=level, message=message)
    with _log_lock:
        sys.stderr.write(json.dumps(line) + "\n")
        sys.stderr.flush()


class Damper:
    """rise/fall flap damping; the first run sets the state at once."""

    def __init__(self, rise, fall):
        self.rise, self.fall = max(rise, 1), max(fall, 1)
        self.known, self.healthy, self.streak = False, False, 0

    def observe(self, passed):
        if not self.known:
            self.known, self.healthy, self.streak = True, passed, 0
            return
        if passed == self.healthy:
            self.streak = 0
            return
        self.streak += 1
        if self.streak >= (self.fall if self.healthy else self.rise):
            self.healthy, self.streak = passed, 0


class Check:
    def __init__(self, cfg, default_interval_ms):
        self.cfg = cfg
        self.interval = (cfg.interval_ms or default_interval_ms) / 1000.0
        self.damp = Damper(cfg.rise, cfg.fall)
        self.error = ""
        self.latency_us = 0
        self.ran = False

    def run(self):
        start = time.monotonic()
        passed = os.path.exists(self.cfg.address)
        self.latency_us = int((time.monotonic() - start) * 1e6)
        self.error = "" if passed else "%s does not exist" % self.cfg.address
        self.damp.observe(passed)
        self.ran = True


def validate(cfg):
    """Refuse everything this checker does not implement, naming the check
    and the setting; returns the error or None."""
    if cfg.interval_ms <= 0:
        return "interval_ms %d must be above 0" % cfg.interval_ms
    names = set()
    for c in cfg.checks:
        where = 'check "%s"' % c.name
        if not c.name or c.name in names:
            return "%s: names must be unique and non-empty" % where
        names.add(c.name)
        if c.protocol != CHECK_TYPE:
            return "%s: protocol %r: this checker knows only %r" % (where, c.protocol, CHECK_TYPE)
        if not os.path.isabs(c.address):
            return "%s: address %r must be an absolute path" % (where, c.address)
        interval = c.interval_ms or cfg.interval_ms
        if c.timeout_ms <= 0 or c.timeout_ms >= interval:
            return "%s: timeout_ms %d must be above 0 and below interval_ms %d" % (where, c.timeout_ms, interval)
        if c.rise < 0 or c.fall < 0:
            return "%s: rise %d and fall %d must not be negative" % (where, c.rise, c.fall)
        for field in ("http", "udp", "exec"):
            if c.HasField(field):
                return "%s: %s settings are not supported by a %s check" % (where, field, CHECK_TYPE)
        if c.options:
            return "%s: options %s are not supported" % (where, ", ".join(sorted(c.options)))
        if c.watch == pb.WATCH_ON:
            return "%s: watch is not supported" % where
    return None


class FileChecker:
    def __init__(self):
        self.lock = threading.Condition()
        self.checks = []
        self.verdict = None  # the newest pb.Health
        self.generation = 0  # bumped on every new verdict
        self.stopping = threading.Event()
        self.loops = []
        self.epoch = 0  # bumped by Configure: older loops end

    # ---- keepvip.v1.Checker

    def configure(self, cfg, context):
        err = validate(cfg)
        if err:
            log("warn", "configure refused", error=err)
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, err)
        with self.lock:
            old = {c.cfg.SerializeToString(deterministic=True): c for c in self.checks}
            checks = []
            for c in cfg.checks:
                kept = old.get(c.SerializeToString(deterministic=True))
                checks.append(kept if kept is not None else Check(c, cfg.interval_ms))
            self.checks = checks
            self.epoch += 1
            epoch = self.epoch
        for c in checks:
            t = threading.Thread(target=self._loop, args=(c, epoch), daemon=True)
            t.start()
        log("info", "configured", checks=len(checks))
        return pb.Empty()

    def watch(self, _req, context):
        seen = -1
        while context.is_active() and not self.stopping.is_set():
            with self.lock:
                if self.generation == seen or self.verdict is None:
                    self.lock.wait(0.5)
                    continue
                seen, verdict = self.generation, self.verdict
            yield verdict  # a slow receiver only skips to the newest

    def status(self, _req, _context):
        with self.lock:
            st = pb.PluginStatus(state="starting")
            if self.verdict is not None:
                st.state = "healthy" if self.verdict.healthy else "unhealthy"
            for c in self.checks:
                d = "not run yet"
                if c.ran:
                    d = "%s %s %s" % ("up" if c.damp.healthy else "down", CHECK_TYPE, c.cfg.address)
                st.details["check " + c.cfg.name] = d
                if c.error:
                    st.details["check " + c.cfg.name + " error"] = c.error
            return st

    def metrics(self, _req, _context):
        # One gauge family, as the Go example exports: filecheck_check_up
        # {check} is 1 while the check is healthy, 0 otherwise (or before
        # its first run).
        with self.lock:
            ups = [(c.cfg.name, 1.0 if c.ran and c.damp.healthy else 0.0) for c in self.checks]
        family = metric_family("filecheck_check_up", "1 while the file check passes, 0 when it fails.",
                               GAUGE, [gauge_metric({"check": name}, v) for name, v in ups])
        return pb.PluginMetrics(families=[family])

    # ---- the checks

    def _loop(self, check, epoch):
        while not self.stopping.is_set():
            with self.lock:
                if self.epoch != epoch:
                    return
                check.run()
                self._publish()
            self.stopping.wait(check.interval)

    def _publish(self):
        """With the lock held: a new verdict once every check has run."""
        if not all(c.ran for c in self.checks):
            return
        h = pb.Health(healthy=True)
        for c in self.checks:
            required = not c.cfg.not_required
            h.checks.add(name=c.cfg.name, address=c.cfg.address, healthy=c.damp.healthy,
                         error=c.error, latency_us=c.latency_us, required=required)
            if required and not c.damp.healthy:
                h.healthy = False
        if self.verdict is None or self.verdict.healthy != h.healthy:
            log("info", "verdict", healthy=h.healthy)
        self.verdict = h
        self.generation += 1
        self.lock.notify_all()

    def close(self):
        self.stopping.set()
        with self.lock:
            self.lock.notify_all()


# ---- Prometheus metric families, encoded by hand
#
# PluginMetrics.families holds serialized io.prometheus.client.MetricFamily
# messages (proto2, prometheus/client_model's io/prometheus/client/
# metrics.proto). Only a few fields are needed for a gauge, so they are
# written here with the protobuf wire format rather than generated:
#   MetricFamily: name = 1 (string), help = 2 (string), type = 3 (enum), metric = 4 (Metric)
#   Metric:       label = 1 (LabelPair), gauge = 2 (Gauge)
#   LabelPair:    name = 1, value = 2 (strings)
#   Gauge:        value = 1 (double)
GAUGE = 1  # MetricType.GAUGE


def _varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field(number, wire_type, payload):
    if wire_type == 2:  # length-delimited: strings, bytes, messages
        payload = _varint(len(payload)) + payload
    return _varint(number << 3 | wire_type) + payload


def gauge_metric(labels, value):
    """One Metric: its labels (a dict) and a gauge value."""
    out = b"".join(_field(1, 2, _field(1, 2, k.encode()) + _field(2, 2, v.encode()))
                   for k, v in sorted(labels.items()))
    return out + _field(2, 2, _field(1, 1, struct.pack("<d", value)))


def metric_family(name, help_text, metric_type, metrics):
    """One serialized MetricFamily."""
    out = _field(1, 2, name.encode()) + _field(2, 2, help_text.encode()) + _field(3, 0, _varint(metric_type))
    return out + b"".join(_field(4, 2, m) for m in metrics)


def unary(fn, req_cls, resp_cls):
    return grpc.unary_unary_rpc_method_handler(
        fn, request_deserializer=req_cls.FromString, response_serializer=resp_cls.SerializeToString)


def server_certificate():
    """A fresh self-signed certificate for localhost, as go-plugin's
    AutoMTLS expects of a plugin: (cert PEM, key PEM, cert DER)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(seconds=30))
            .not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem, cert.public_bytes(serialization.Encoding.DER)


def main():
    if os.environ.get(COOKIE_KEY) != COOKIE_VALUE:
        sys.stderr.write("this is a keep-vip checker plugin: keep-vip-supervisor runs it\n")
        return 1
    versions = os.environ.get("PLUGIN_PROTOCOL_VERSIONS", APP_PROTOCOL_VERSION).split(",")
    if APP_PROTOCOL_VERSION not in versions:
        log("error", "the supervisor speaks none of this plugin's protocol versions", offered=",".join(versions))
        return 1
    client_cert = os.environ.get("PLUGIN_CLIENT_CERT", "").encode()
    if not client_cert:
        log("error", "PLUGIN_CLIENT_CERT is not set: keep-vip-supervisor runs plugins with AutoMTLS")
        return 1

    impl = FileChecker()
    done = threading.Event()

    def shutdown(_req, _context):
        log("info", "shutdown requested")
        done.set()
        return b""

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((
        grpc.method_handlers_generic_handler("keepvip.v1.Checker", {
            "Configure": unary(impl.configure, pb.CheckerConfig, pb.Empty),
            "Watch": grpc.unary_stream_rpc_method_handler(
                impl.watch, request_deserializer=pb.Empty.FromString,
                response_serializer=pb.Health.SerializeToString),
            "Status": unary(impl.status, pb.Empty, pb.PluginStatus),
            "Metrics": unary(impl.metrics, pb.Empty, pb.PluginMetrics),
        }),
        # go-plugin's controller: plugin.Empty has no fields, so both sides
        # are zero bytes and need no generated class.
        grpc.method_handlers_generic_handler("plugin.GRPCController", {
            "Shutdown": grpc.unary_unary_rpc_method_handler(
                shutdown, request_deserializer=lambda b: b, response_serializer=lambda b: b),
        }),
    ))
    cert_pem, key_pem, cert_der = server_certificate()
    creds = grpc.ssl_server_credentials([(key_pem, cert_pem)], root_certificates=client_cert,
                                        require_client_auth=True)
    sockdir = tempfile.mkdtemp(prefix="keep-vip-checker-")
    sock = os.path.join(sockdir, "plugin.sock")
    server.add_secure_port("unix:" + sock, creds)
    server.start()

    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGHUP, lambda *_: done.set())

    cert_field = base64.b64encode(cert_der).rstrip(b"=").decode()
    sys.stdout.write("|".join([CORE_PROTOCOL_VERSION, APP_PROTOCOL_VERSION, "unix", sock, "grpc", cert_field]) + "\n")
    sys.stdout.flush()
    log("debug", "serving", address=sock)

    while not done.wait(1):
        pass
    impl.close()
    server.stop(0.5).wait(1.5)
    try:
        os.unlink(sock)
        os.rmdir(sockdir)
    except OSError:
        pass
    log("info", "stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
