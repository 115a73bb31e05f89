"""Where the client keeps its settings: `.box/config` in a synced folder, credentials in the user's
config directory (mode 0600, never inside the synced folder)."""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from boxctl.errors import AuthError, NotABox, UsageError

BOX_DIR = ".box"


def config_home() -> Path:
    """The user's Box config directory ($BOX_CONFIG_DIR, else $XDG_CONFIG_HOME/box, else ~/.config/box)."""
    if os.environ.get("BOX_CONFIG_DIR"):
        return Path(os.environ["BOX_CONFIG_DIR"])
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "box"


def normalize_url(url: str) -> str:
    """A server URL without a trailing slash; refuses anything but http(s)."""
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise UsageError(f"server URL {url!r} must start with http:// or https://")
    return url


@dataclass
class Credentials:
    """A user name and token for one server, plus the tokens of devices registered from this machine."""

    server: str
    user: str
    token: str
    devices: dict[str, dict[str, Any]] = field(default_factory=dict)

    def for_device(self, name: str) -> str:
        """The token a synced folder of device `name` should use (the account token if none)."""
        if os.environ.get("BOX_TOKEN"):
            return self.token
        return str(self.devices.get(name, {}).get("token") or self.token)


def _credentials_file() -> Path:
    return config_home() / "credentials.json"


def save_credentials(creds: Credentials, ca_cert: Path | None = None) -> Path:
    """Store credentials for `creds.server`, readable only by this user (and the CA it is trusted by)."""
    path = _credentials_file()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    data = _read_credentials()
    kept_ca = data.get(creds.server, {}).get("ca_cert")
    data[creds.server] = {"user": creds.user, "token": creds.token, "devices": creds.devices}
    if ca_cert is not None or kept_ca:
        data[creds.server]["ca_cert"] = str(ca_cert) if ca_cert is not None else kept_ca
    temp = path.with_suffix(".tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(data, out, indent=2)
    os.chmod(temp, 0o600)
    os.replace(temp, path)
    return path


def _read_credentials() -> dict[str, dict[str, str]]:
    try:
        return json.loads(_credentials_file().read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise AuthError(f"cannot read {_credentials_file()}: {exc}") from None


def tls_trust(server: str) -> str | bool:
    """What verifies `server`'s certificate: $BOX_CA_CERT (or --ca-cert), else the CA file stored at
    login for that server, else the system's trusted authorities (True). Never off."""
    given = os.environ.get("BOX_CA_CERT")
    if given:
        return given
    try:
        stored = _read_credentials().get(server, {}).get("ca_cert")
    except AuthError:
        stored = None
    return str(stored) if stored else True


def check_ca_cert(path: Path) -> Path:
    """`path` as an absolute CA file name, or a usage error when it cannot be read."""
    try:
        text = path.read_text(encoding="ascii", errors="replace")
    except OSError as exc:
        raise UsageError(f"cannot read the CA certificate {path}: {exc.strerror}") from None
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise UsageError(f"{path} is not a PEM certificate file")
    return path.resolve()


def load_credentials(server: str | None) -> Credentials:
    """Credentials for `server` (or $BOX_SERVER): $BOX_TOKEN wins over the stored token."""
    server = server or os.environ.get("BOX_SERVER")
    stored = _read_credentials()
    if server:
        server = normalize_url(server)
    elif len(stored) == 1:
        server = next(iter(stored))
    else:
        raise AuthError("no server given: pass a URL, set BOX_SERVER, or run 'boxctl login URL'")
    token = os.environ.get("BOX_TOKEN")
    entry = stored.get(server, {})
    if token:
        return Credentials(server, entry.get("user", os.environ.get("BOX_USER", "")), token)
    if not entry:
        raise AuthError(f"not logged in to {server}: run 'boxctl login {server} --user NAME --token TOKEN'")
    return Credentials(server, entry["user"], entry["token"], entry.get("devices", {}))


def save_device(creds: Credentials, name: str, device_id: int, token: str) -> None:
    """Remember a device registered from this machine, with its own token (revocable on its own).

    The login token is replaced by the device's token: from now on this machine holds only device
    tokens, so revoking its device locks it out (it cannot register itself again under a new name).
    """
    creds.devices[name] = {"id": device_id, "token": token}
    creds.token = token
    save_credentials(creds)


@dataclass
class BoxConfig:
    """The contents of `.box/config`: which box on which server this folder syncs, as which device."""

    server: str
    box_id: int
    box_name: str
    owner: str
    device_id: int
    device_name: str
    min_size: int
    avg_size: int
    max_size: int
    prefix: str = ""
    only: list[str] = field(default_factory=list)  # selective sync: the box paths kept here ([] = all)
    # This synced folder's own id: one device may sync a box in several folders, each with its own cursor
    # on the server ('' in a folder made before folders were told apart: given one when next opened).
    folder: str = ""

    def save(self, root: Path) -> None:
        path = root / BOX_DIR / "config"
        temp = path.with_suffix(".tmp")
        temp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        os.replace(temp, path)

    @classmethod
    def load(cls, root: Path) -> BoxConfig:
        path = root / BOX_DIR / "config"
        try:
            return cls(**json.loads(path.read_text()))
        except FileNotFoundError:
            raise NotABox(f"{root} is not a synced folder: run 'boxctl init' or 'boxctl clone'") from None
        except (OSError, ValueError, TypeError) as exc:
            raise NotABox(f"{path} is damaged ({exc}); clone the box again into a new folder") from None


def new_folder_id() -> str:
    """A random id for a new synced folder (see BoxConfig.folder)."""
    return secrets.token_hex(8)


def find_root(start: Path) -> Path:
    """The outermost folder at or above `start` that holds `.box/`.

    Outermost, not nearest: a `.box/` below a synced folder's root never syncs, so one found there was
    planted (by an editor of a shared folder, say) and must not choose the server or the box.
    """
    start = start.resolve()
    found = [folder for folder in (start, *start.parents) if (folder / BOX_DIR / "config").is_file()]
    if found:
        return found[-1]
    raise NotABox(f"{start} is not inside a synced folder: run 'boxctl init' or 'boxctl clone' first")
