"""The cm package against a real cm-server: images, containers, exec, logs, stats, events, errors."""

import threading
import time

import pytest

import cm


def test_pull_yields_resolved_then_layer_progress_then_done(client, image):
    progress = list(client.images.pull(image))
    assert isinstance(progress[0], cm.PullResolved)
    assert progress[0].layers and progress[0].total_bytes > 0
    assert isinstance(progress[-1], cm.PullDone) and progress[-1].image_id.startswith("sha256:")
    assert all(isinstance(p, (cm.LayerProgress, cm.PullSummary)) for p in progress[1:-1])


def test_images_list_get_and_remove_a_second_name(client, image):
    pulled = client.images.get(image)
    assert pulled in client.images.list()
    assert pulled.config["config"]["Cmd"] or pulled.config["config"].get("Env") is not None
    digest = pulled.attrs.manifest_digest
    by_digest = image.rsplit(":", 1)[0] + "@" + digest
    client.images.pull_image(by_digest)
    assert by_digest in client.images.get(image).tags
    # Containers of other tests use the image (by id): without force the name would not go.
    removed = client.images.remove(by_digest, force=True)
    assert list(removed.untagged) == [by_digest] and not removed.deleted
    assert by_digest not in client.images.get(image).tags


def test_run_returns_stdout_and_removes_the_container(client, image, name):
    out = client.containers.run(image, ["sh", "-c", "echo out; echo err >&2"], remove=True, name=name)
    assert out == b"out\n"
    with pytest.raises(cm.NotFound):
        client.containers.get(name)
    both = client.containers.run(image, "sh -c 'echo out; echo err >&2'", remove=True, stderr=True)
    assert sorted(both.splitlines()) == [b"err", b"out"]


def test_a_failing_run_raises_container_error_with_exit_code_and_stderr(client, image, name):
    with pytest.raises(cm.ContainerError) as failed:
        client.containers.run(image, ["sh", "-c", "echo bad >&2; exit 3"], name=name)
    assert failed.value.exit_code == 3 and failed.value.stderr == b"bad\n"
    assert failed.value.container.name == name
    failed.value.container.remove()


def test_detached_run_wait_logs_and_states(client, image, name):
    container = client.containers.run(image, ["sh", "-c", "echo one; echo two >&2; exit 5"], detach=True, name=name)
    try:
        assert container.wait().exit_code == 5
        container.reload()
        assert container.status == "exited" and container.attrs.exit.exit_code == 5
        assert sorted(container.logs().splitlines()) == [b"one", b"two"]
        assert container.logs(stderr=False) == b"one\n"
        assert list(container.logs(stream=True, tail=1)) and container.logs(timestamps=True).count(b"Z ") == 2
        assert container in client.containers.list(all=True) and container not in client.containers.list()
    finally:
        container.remove()


def test_create_start_stop_kill_and_spec_options(client, image, name):
    container = client.containers.create(
        image, ["sh", "-c", "echo $GREETING; cat /proc/self/cgroup >/dev/null; sleep 600"],
        name=name, environment={"GREETING": "hi"}, mem_limit="64m", labels={"suite": "python"},
        network_mode="none",
    )
    try:
        assert container.status == "created" and container.labels == {"suite": "python"}
        assert container.attrs.spec.resources.memory_bytes == 64 << 20
        container.start()
        container.reload()
        assert container.status == "running"
        with pytest.raises(cm.Conflict) as running:
            container.remove()
        assert running.value.code.name == "FAILED_PRECONDITION"
        deadline = time.monotonic() + 10
        while container.logs() != b"hi\n" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert container.logs() == b"hi\n"
        container.kill("KILL")  # PID 1 of the container ignores signals it has no handler for
        status = container.wait(timeout=10)
        assert status.signal == "SIGKILL" and status.exit_code == 128 + 9
    finally:
        container.remove(force=True)


def test_stop_ends_a_container_that_ignores_sigterm_after_the_grace_period(client, image, name):
    container = client.containers.run(image, ["sh", "-c", "trap '' TERM; sleep 600"], detach=True, name=name)
    try:
        started = time.monotonic()
        container.stop(timeout=0.5)
        assert 0.4 < time.monotonic() - started < 8
        assert container.wait().signal == "SIGKILL"
    finally:
        container.remove(force=True)


def test_exec_run_with_stdin_demux_tty_and_missing_commands(sleeper):
    assert sleeper.exec_run(["sort", "-r"], stdin=b"a\nb\nc\n") == (0, b"c\nb\na\n")
    code, (out, err) = sleeper.exec_run("sh -c 'echo o; echo e >&2; exit 4'", demux=True)
    assert (code, out, err) == (4, b"o\n", b"e\n")
    code, out = sleeper.exec_run(["tty"], tty=True)
    assert code == 0 and out.startswith(b"/dev/pts/")
    assert sleeper.exec_run(["no-such-command"]).exit_code == 127
    assert sleeper.exec_run(["env"], environment={"X": "1"}, workdir="/tmp").output.count(b"X=1") == 1


def test_interactive_exec_write_close_resize_and_signal(sleeper):
    with sleeper.exec(["cat"]) as session:
        assert session.pid > 0 and session.exec_id
        session.write(b"hello ")
        session.write("world\n")
        session.close_stdin()
        assert session.output() == (b"hello world\n", b"")
        assert session.exit_code == 0
    with sleeper.exec(["sh", "-c", "read line; stty size"], tty=True, tty_size=(24, 80)) as session:
        session.resize(30, 100)
        session.write(b"go\n")
        out = b"".join(piece.data for piece in session)
        assert b"30 100" in out and session.exit_code == 0
    with sleeper.exec(["sleep", "600"], stdin=False) as session:
        session.signal("SIGTERM")
        status = session.wait()
        assert status.signal == "SIGTERM"


def test_stats_one_sample_and_a_stream(sleeper):
    sample = sleeper.stats(stream=False)
    assert sample.id == sleeper.id and sample.pids.current == 1 and sample.memory.usage_bytes > 0
    stream = sleeper.stats(interval=0.2)
    first, second = next(stream), next(stream)
    assert second.time.ToNanoseconds() > first.time.ToNanoseconds()
    stream.close()


def test_events_are_filtered_by_container_and_replayed_since_a_time(client, image, name):
    since = time.time()
    client.containers.run(image, ["true"], name=name, remove=True)
    client.containers.run(image, ["true"], remove=True)  # another container's events are filtered out
    events = client.events(filters={"container": name, "type": "container"}, since=since)
    seen = []

    def collect():
        for event in events:
            seen.append(event.action)
            if event.action == "destroy":
                return

    reader = threading.Thread(target=collect, daemon=True)
    reader.start()
    reader.join(10)
    if not reader.is_alive():
        events.close()
    assert seen[:1] == ["create"] and "start" in seen and "die" in seen and seen[-1] == "destroy", seen
    with pytest.raises(cm.InvalidArgument):
        next(iter(client.events(filters=["nonsense=1"])))


def test_errors_carry_the_grpc_code_and_message(client, image, sleeper):
    with pytest.raises(cm.NotFound) as missing:
        client.containers.get("no-such-container")
    assert missing.value.code.name == "NOT_FOUND" and "no-such-container" in missing.value.message
    with pytest.raises(cm.Conflict) as taken:
        client.containers.create(image, ["true"], name=sleeper.name)
    assert taken.value.code.name == "ALREADY_EXISTS"
    with pytest.raises(cm.InvalidArgument):
        list(client.images.pull("Not A Reference"))
    with pytest.raises(cm.NotFound):
        client.images.get("sha256:" + "0" * 64)
    with pytest.raises(TypeError):
        client.containers.create(image, ["true"], no_such_option=1)
    assert isinstance(missing.value, cm.APIError) and isinstance(missing.value, cm.CMError)


def test_from_env_reads_cm_host(monkeypatch, host):
    monkeypatch.setenv("CM_HOST", host)
    with cm.Client.from_env() as client:
        assert client.host == host and client.ping()
    monkeypatch.delenv("CM_HOST")
    assert cm.Client.from_env().host == cm.DEFAULT_HOST == "unix:/run/cm.sock"


def test_tls_parameters_make_a_secure_channel_and_are_refused_on_unix(tmp_path):
    # The server has no TLS yet; this checks the client side: the certificates reach grpc and the call fails
    # to connect (no server there) with Unavailable instead of being sent in clear.
    with pytest.raises(ValueError):
        cm.Client("unix:/run/cm.sock", tls_ca_cert=b"x")
    client = cm.Client("tcp://127.0.0.1:9", timeout=2, tls_ca_cert=None, tls_client_cert=b"", tls_client_key=b"")
    with pytest.raises((cm.Unavailable, cm.DeadlineExceeded)):
        client.ping()
