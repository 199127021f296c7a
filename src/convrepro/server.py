"""``convrepro-server``: a team's MLflow tracking server (``make mlflow-server``).

MLflow 3's server answers only requests whose Host header it allows (a guard against DNS
rebinding): by default localhost and private addresses.  Bound beyond localhost, it must
also allow the names colleagues will type, so this passes ``--allowed-hosts`` with the
machine's own names and addresses (``--allowed-hosts`` / ``ALLOWED_HOSTS`` add more).

With ``MLFLOW_AUTH_ADMIN_PASSWORD`` set in the environment it starts MLflow's own basic
authentication (``--app-name basic-auth``): every request needs a user and password, the
admin user is created with that password on first start, new users get READ.  Credentials
come from the environment only, never from the repository; the users' database and the
CSRF secret live in the server folder.  Without it, anyone who reaches the port can read,
write and delete every run: the server then says so, and refuses to bind beyond
localhost unless ``--no-auth`` says that this is intended.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import secrets
import socket
import sys
from pathlib import Path

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def machine_names(host: str) -> list[str]:
    """Host names and addresses under which colleagues may reach this machine."""
    names = {"localhost", "127.0.0.1", socket.gethostname(), socket.getfqdn()}
    if host not in ("0.0.0.0", "::"):
        names.add(host)
    try:
        names.update(info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None))
    except OSError:
        pass
    names.add(outward_address())
    return sorted(n for n in names if n)


def outward_address() -> str:
    """The address of the interface that routes off the machine (no packet is sent)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.254", 9))  # TEST-NET: a route is looked up, nothing is sent
            return s.getsockname()[0]
    except OSError:
        return ""


def allowed_hosts(host: str, port: int, extra: list[str]) -> str:
    out = []
    for name in [*machine_names(host), *extra]:
        try:
            literal = f"[{name}]" if ipaddress.ip_address(name).version == 6 else name
        except ValueError:
            literal = name
        out += [literal, f"{literal}:{port}"]
    return ",".join(dict.fromkeys(out))


def auth_config(folder: Path) -> Path:
    """The basic-auth settings: users' database in the server folder, READ for new users."""
    path = folder / "basic_auth.ini"
    path.write_text("[mlflow]\ndefault_permission = READ\n"
                    f"database_uri = sqlite:///{(folder / 'basic_auth.db').resolve()}\n"
                    "admin_username = admin\n"
                    "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    return path


def secret_key(folder: Path) -> str:
    """The CSRF secret basic auth needs, kept (mode 600) so that restarts keep sessions valid."""
    path = folder / "flask_secret"
    if not path.exists():
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text().strip()


def command(args, folder: Path, auth: bool) -> list[str]:
    store = f"sqlite:///{(folder / 'mlflow.db').resolve()}"
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store,
           "--artifacts-destination", str((folder / "artifacts").resolve()), "--serve-artifacts",
           "--host", args.host, "--port", str(args.port),
           "--allowed-hosts", allowed_hosts(args.host, args.port, args.allowed_hosts)]
    return [*cmd, "--app-name", "basic-auth"] if auth else cmd


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="convrepro-server", description=__doc__.splitlines()[0])
    parser.add_argument("--folder", default="mlflow-server", help="runs, artifacts and users live here")
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"),
                        help="address to bind (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "5000")))
    parser.add_argument("--allowed-hosts", action="append",
                        default=[h for h in os.environ.get("ALLOWED_HOSTS", "").split(",") if h],
                        help="another host name clients use (repeatable)")
    parser.add_argument("--no-auth", action="store_true",
                        help="serve beyond localhost without authentication (anyone on the network can write)")
    parser.add_argument("--dry-run", action="store_true", help="print the command, start nothing")
    args = parser.parse_args(argv)
    folder = Path(args.folder)
    (folder / "artifacts").mkdir(parents=True, exist_ok=True)
    auth = bool(os.environ.get("MLFLOW_AUTH_ADMIN_PASSWORD"))
    env = dict(os.environ)
    if auth:
        env["MLFLOW_AUTH_CONFIG_PATH"] = str(auth_config(folder))
        env.setdefault("MLFLOW_FLASK_SERVER_SECRET_KEY", secret_key(folder))
    elif args.host not in LOOPBACK and not args.no_auth:
        print(f"error: binding {args.host} without authentication lets anyone on the network read, write and "
              "delete every run: set MLFLOW_AUTH_ADMIN_PASSWORD (basic authentication), or pass --no-auth",
              file=sys.stderr)
        return 2
    cmd = command(args, folder, auth)
    where = f"http://{socket.gethostname() if args.host not in LOOPBACK else args.host}:{args.port}"
    how = "basic authentication: admin + MLFLOW_AUTH_ADMIN_PASSWORD" if auth else "no authentication"
    login = " MLFLOW_TRACKING_USERNAME=… MLFLOW_TRACKING_PASSWORD=…" if auth else ""
    print(f"tracking server at {where} ({how}); runs: MLFLOW_TRACKING_URI={where}{login}", file=sys.stderr)
    if args.dry_run:
        print(" ".join(cmd))
        return 0
    os.execvpe(cmd[0], cmd, env)
    return 0  # not reached


if __name__ == "__main__":
    raise SystemExit(main())
