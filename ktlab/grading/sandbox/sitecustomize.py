"""Loaded at start-up by every Python process ``ktlab grade`` starts (it is put on PYTHONPATH).

It refuses network access inside the grading kernel: connecting a socket to anything but the
loopback interface (where the kernel talks to the grader) raises ``OSError``, and host names
other than localhost do not resolve. Not a sandbox against a determined attacker; it makes an
accidental download (a hub model, a dataset) fail at once with a clear message instead of
hanging until the timeout.
"""
import os

if os.environ.get("KTLAB_GRADING_NO_NETWORK") == "1":
    import errno
    import ipaddress
    import socket

    _MSG = "network access is disabled while grading (ktlab grade); use the offline data mirror"
    _LOCAL_NAMES = {None, "", "localhost", "localhost.localdomain", "ip6-localhost"}

    def _is_local(host) -> bool:
        if isinstance(host, bytes):
            host = host.decode(errors="replace")
        if host in _LOCAL_NAMES:
            return True
        try:
            return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
        except ValueError:
            return False

    def _allowed(sock, address) -> bool:
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            return True  # unix sockets and the like stay local
        host = address[0] if isinstance(address, tuple) else address
        return _is_local(host) or str(host) in ("0.0.0.0", "::")

    _connect, _connect_ex, _sendto = socket.socket.connect, socket.socket.connect_ex, socket.socket.sendto
    _getaddrinfo = socket.getaddrinfo

    def connect(self, address):
        if not _allowed(self, address):
            raise OSError(errno.ENETUNREACH, _MSG)
        return _connect(self, address)

    def connect_ex(self, address):
        if not _allowed(self, address):
            return errno.ENETUNREACH
        return _connect_ex(self, address)

    def sendto(self, data, *args):
        if args and not _allowed(self, args[-1]):
            raise OSError(errno.ENETUNREACH, _MSG)
        return _sendto(self, data, *args)

    def getaddrinfo(host, *args, **kwargs):
        if not _is_local(host):
            try:
                ipaddress.ip_address(str(host if not isinstance(host, bytes) else host.decode()))
            except ValueError:
                raise socket.gaierror(socket.EAI_NONAME, _MSG) from None
        return _getaddrinfo(host, *args, **kwargs)

    socket.socket.connect = connect
    socket.socket.connect_ex = connect_ex
    socket.socket.sendto = sendto
    socket.getaddrinfo = getaddrinfo
