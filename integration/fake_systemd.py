"""A stand-in for systemd's manager on a test bus (integration scenes).

``python fake_systemd.py ADDRESS RECORD CGROUP_DIR``: owns
org.freedesktop.systemd1, writes "ready" to RECORD once it does, and
answers ``org.freedesktop.systemd1.Manager.RestartUnit(name, mode)`` with a
job path, appending ``{"unit": name, "mode": mode}`` to RECORD.  Its
"restart" sends SIGUSR1 to every process in CGROUP_DIR (a cooperating hog
frees its memory on it: the service came back small).  Anything else gets
UnknownMethod.
"""

from __future__ import annotations

import json
import os
import signal
import sys


def main() -> int:
    address, record, cgroup_dir = sys.argv[1:4]
    from jeepney import MessageType, message_bus, new_error, new_method_return
    from jeepney.io.blocking import open_dbus_connection

    conn = open_dbus_connection(address)
    assert conn.send_and_get_reply(message_bus.RequestName("org.freedesktop.systemd1")).body[0] == 1
    with open(record, "a") as f:
        f.write("ready\n")
    jobs = 0
    while True:
        msg = conn.receive()
        if msg.header.message_type != MessageType.method_call:
            continue
        iface, member = msg.header.fields.get(2), msg.header.fields.get(3)
        if iface == "org.freedesktop.systemd1.Manager" and member == "RestartUnit":
            jobs += 1
            with open(record, "a") as f:
                f.write(json.dumps({"unit": msg.body[0], "mode": msg.body[1]}) + "\n")
            conn.send(new_method_return(msg, "o", (f"/org/freedesktop/systemd1/job/{jobs}",)))
            with open(os.path.join(cgroup_dir, "cgroup.procs")) as f:
                for pid in f.read().split():
                    try:
                        os.kill(int(pid), signal.SIGUSR1)
                    except OSError:
                        pass
        else:
            conn.send(new_error(msg, "org.freedesktop.DBus.Error.UnknownMethod", "s", (str(member),)))


if __name__ == "__main__":
    sys.exit(main())
