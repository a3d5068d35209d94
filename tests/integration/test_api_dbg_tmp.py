from tests.integration.streamclient import Hijack, demux
def test_dbg(api, api_busybox):
    client = api.client()
    box = client.containers.run("busybox", ["sh", "-c", "echo started; read x; echo got $x"],
                                detach=True, stdin_open=True, name="py")
    stream = box.logs(stream=True, follow=True)
    assert next(stream) == b"started\n"
    sock = box.attach_socket(params={"stdin": 1, "stream": 1})
    sock._sock.sendall(b"line\n")
    assert b"".join(stream) == b"got line\n"  # follow ended with the container
    sock.close()
    print(box.wait())
    print("LOGS", box.logs())
    h = Hijack(api, f"/v1.41/containers/{box.id}/attach?logs=1&stdout=1&stderr=1&stream=0")
    print("RAW", h.read_all())
    print("PY", box.attach(stdout=True, stderr=True, logs=True))
    print(api.server_log()[-3000:])
