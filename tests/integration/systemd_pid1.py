"""A real systemd as PID 1 in throwaway namespaces, for testing the unit as operators run it.

Follows ../shared/notes/systemd-in-namespace.md: new pid, mount, net, uts, ipc and cgroup
namespaces; a root that is an overlay of / with a tmpfs upper layer (nothing is written to the
host); private /dev, /run and /tmp; read-only /sys; cgroup2 rooted at a child cgroup made here;
an empty boot target. ``ip netns attach`` names its network namespace so the lab can wire it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

INNER = r"""
set -euo pipefail
mount --make-rprivate /
T=$LAB/t; R=$LAB/t/root
mkdir -p "$T"; mount -t tmpfs -o mode=755 kvsd "$T"
mkdir "$T/upper" "$T/work" "$R"
mount -t overlay overlay -o "lowerdir=/,upperdir=$T/upper,workdir=$T/work" "$R"
mount -t proc -o nosuid,nodev,noexec proc "$R/proc"
for p in sys sysrq-trigger; do
  [ -e "$R/proc/$p" ] || continue
  mount --bind "$R/proc/$p" "$R/proc/$p"; mount -o remount,bind,ro "$R/proc/$p"
done
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$R/sys"
mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 "$R/sys/fs/cgroup"
mount -t tmpfs -o mode=755,nosuid,size=4m dev "$R/dev"
for n in null zero full random urandom tty; do
  touch "$R/dev/$n"; mount --bind "/dev/$n" "$R/dev/$n"
done
mkdir "$R/dev/pts" "$R/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=620,gid=5 devpts "$R/dev/pts"
ln -s pts/ptmx "$R/dev/ptmx"; ln -s /proc/self/fd "$R/dev/fd"
ln -s /proc/self/fd/0 "$R/dev/stdin"; ln -s /proc/self/fd/1 "$R/dev/stdout"
ln -s /proc/self/fd/2 "$R/dev/stderr"
mount -t tmpfs -o mode=1777,nosuid,nodev shm "$R/dev/shm"
touch "$R/dev/console"; mount --bind "$CONSOLE" "$R/dev/console"
mount -t tmpfs -o mode=755,nosuid,nodev run "$R/run"
mount -t tmpfs -o mode=1777,nosuid,nodev tmp "$R/tmp"
E=$R/etc/systemd/system
printf '[Unit]\nDescription=CI minimal boot target\nAllowIsolate=yes\n' >"$E/ci.target"
for u in systemd-timesyncd.service systemd-networkd.service systemd-resolved.service \
  getty@.service console-getty.service serial-getty@.service systemd-udevd.service \
  systemd-udev-trigger.service systemd-modules-load.service kmod-static-nodes.service \
  systemd-sysctl.service systemd-binfmt.service systemd-pstore.service \
  systemd-hwdb-update.service systemd-firstboot.service modprobe@.service timers.target \
  apt-daily.timer apt-daily-upgrade.timer fstrim.timer e2scrub_all.timer man-db.timer \
  dpkg-db-backup.timer kubelet.service; do
  ln -sf /dev/null "$E/$u"
done
echo "kvsd" >"$R/etc/hostname"
while read -r k v; do
  [ "$k" = NSpid: ] && echo "${v%%[[:space:]]*}" >"$LAB/ns.pid"
done </proc/self/status
cd "$R"; mkdir -p .oldroot; pivot_root . .oldroot; cd /
umount -l /.oldroot; rmdir /.oldroot
exec env -i container=kubevipd-ci TERM=dumb SYSTEMD_COLORS=0 \
  /lib/systemd/systemd --unit=ci.target --log-level=info --show-status=no
"""


class Unavailable(Exception):
    """This machine cannot boot systemd in namespaces (no cgroup2 or overlayfs)."""


def _cgroup2_mount() -> str | None:
    r = subprocess.run(
        ["findmnt", "-rn", "-t", "cgroup2", "-o", "TARGET"], capture_output=True, text=True
    )
    lines = r.stdout.split()
    return lines[0] if lines else None


class SystemdContainer:
    def __init__(self, workdir: Path, netns_name: str) -> None:
        self.workdir = workdir
        self.netns_name = netns_name
        self.console = workdir / "console.log"
        self.pid: int | None = None  # host pid of the container's PID 1
        self._unshare: subprocess.Popen[bytes] | None = None
        self._cgroup: Path | None = None

    def __enter__(self) -> SystemdContainer:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        cg2 = _cgroup2_mount()
        if cg2 is None:
            raise Unavailable("no cgroup2 mount on this machine")
        if "overlay" not in Path("/proc/filesystems").read_text():
            raise Unavailable("no overlayfs on this machine")
        current = next(
            line.split(":", 2)[2]
            for line in Path("/proc/self/cgroup").read_text().splitlines()
            if line.startswith("0:")
        )
        self._cgroup = Path(cg2 + current.rstrip("/")) / f"kvsd.{os.getpid()}.{id(self)}"
        self._cgroup.mkdir()
        self.console.write_text("")
        inner = self.workdir / "inner.sh"
        inner.write_text(INNER)
        self._unshare = subprocess.Popen(
            [
                "bash",
                "-c",
                f'echo $$ > "{self._cgroup}/cgroup.procs"; exec unshare --fork --pid --mount '
                "--net --uts --ipc --cgroup --propagation private "
                f'env LAB="{self.workdir}" CONSOLE="{self.console}" bash "{inner}"',
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        pid_file = self.workdir / "ns.pid"
        end = time.monotonic() + 15
        while time.monotonic() < end and not (pid_file.exists() and pid_file.read_text().strip()):
            if self._unshare.poll() is not None:
                raise RuntimeError("the namespace exited while booting")
            time.sleep(0.05)
        self.pid = int(pid_file.read_text())
        end = time.monotonic() + 30
        state = ""
        while time.monotonic() < end:
            state = self.systemctl("is-system-running", check=False).stdout.strip()
            if state in ("running", "degraded"):
                break
            time.sleep(0.1)
        else:
            raise RuntimeError(f"systemd did not finish booting: {state}")
        subprocess.run(
            ["ip", "netns", "attach", self.netns_name, str(self.pid)],
            check=True,
            capture_output=True,
        )

    def run(
        self, *cmd: str, check: bool = True, input: str | bytes | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside the container (all its namespaces and its root)."""
        assert self.pid is not None
        data = input.encode() if isinstance(input, str) else input
        r = subprocess.run(
            ["nsenter", "-t", str(self.pid), "-a", *cmd],
            input=data,
            capture_output=True,
            timeout=timeout,
        )
        stdout, stderr = r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")
        out = subprocess.CompletedProcess(r.args, r.returncode, stdout, stderr)
        if check and out.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed ({out.returncode}): {stdout}{stderr}")
        return out

    def systemctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("systemctl", "--no-pager", *args, check=check)

    def prop(self, unit: str, name: str) -> str:
        return self.systemctl("show", "-P", name, unit).stdout.strip()

    def write(self, path: str, data: str | bytes, mode: str = "0644") -> None:
        script = f'mkdir -p "$(dirname {path})" && cat > {path} && chmod {mode} {path}'
        self.run("sh", "-c", script, input=data)

    def journal(self, unit: str) -> str:
        return self.run("journalctl", "--no-pager", "-o", "cat", "-u", unit, check=False).stdout

    def stop(self) -> None:
        """Power off (SIGRTMIN+4), then make sure nothing of it is left on the host."""
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGRTMIN + 4)
        if self._unshare is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._unshare.wait(15)
        if self._cgroup is not None and self._cgroup.exists():
            kill = self._cgroup / "cgroup.kill"
            if kill.exists():
                with contextlib.suppress(OSError):
                    kill.write_text("1")
            if self._unshare is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._unshare.wait(10)
            for _ in range(50):
                for d in sorted(self._cgroup.rglob("*"), key=lambda p: -len(p.parts)):
                    if d.is_dir():
                        with contextlib.suppress(OSError):
                            d.rmdir()
                with contextlib.suppress(OSError):
                    self._cgroup.rmdir()
                if not self._cgroup.exists():
                    break
                time.sleep(0.1)
        subprocess.run(["ip", "netns", "delete", self.netns_name], capture_output=True)
        self.pid = None
