"""Raw HTTP / WebSocket probes against `surfaceport preview`, for tests/preview_test.ts.

usage: preview_probe.py PORT requests JSON   -> prints [{"status", "body"}] for each
                                                {"path", "headers"} request (one connection each)
       preview_probe.py PORT stall PATH HEADERS_JSON SECONDS
                                             -> opens a WebSocket, sends "ready" every 10 ms for
                                                SECONDS and never reads; prints the status line
Run as another uid by the test (setpriv), so it uses nothing but the standard library.
"""
import base64, json, os, socket, sys, time


def request(port, path, headers, keep=False):
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    lines = [f"GET {path} HTTP/1.1"] + [f"{k}: {v}" for k, v in headers.items()]
    if not keep:
        lines.append("Connection: close")
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    return sock


def read_head(sock):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(1)
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace")


def probe(port, path, headers):
    sock = request(port, path, headers)
    head = read_head(sock)
    status = int(head.split(" ")[1]) if head.startswith("HTTP/") else 0
    body = b""
    if status != 101:
        try:
            while len(body) < 1 << 20:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                body += chunk
        except socket.timeout:
            pass
    sock.close()
    return {"status": status, "body": body.decode(errors="replace")}


def masked_text(text):
    payload = text.encode()
    mask = os.urandom(4)
    return bytes([0x81, 0x80 | len(payload)]) + mask + bytes(
        b ^ mask[i % 4] for i, b in enumerate(payload)
    )


def main():
    port = int(sys.argv[1])
    if sys.argv[2] == "requests":
        results = [probe(port, r["path"], r["headers"]) for r in json.loads(sys.argv[3])]
        print(json.dumps(results), flush=True)
        return
    path, headers, seconds = sys.argv[3], json.loads(sys.argv[4]), float(sys.argv[5])
    headers.update({
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
    })
    sock = request(port, path, headers, keep=True)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    print(read_head(sock).split("\r\n")[0], flush=True)
    end = time.time() + seconds
    sent = 0
    while time.time() < end:
        try:
            sock.sendall(masked_text("ready"))
            sent += 1
        except OSError:
            break
        time.sleep(0.01)
    print(f"sent {sent}", flush=True)
    sock.close()


main()
