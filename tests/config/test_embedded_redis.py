import redis

from bridge.config.embedded_redis import EmbeddedRedis


def test_acknowledged_writes_survive_a_restart() -> None:
    server = EmbeddedRedis().start()
    try:
        client = redis.Redis(port=server.port)
        client.set("k", "v")
        client.close()
        server.stop(kill=True)
        server.start()
        client = redis.Redis(port=server.port)
        assert client.get("k") == b"v"
        client.close()
    finally:
        server.close()


def test_session_redis_is_reachable(redis_client: redis.Redis) -> None:
    assert redis_client.ping()
    redis_client.set("x", 1)
    assert redis_client.get("x") == b"1"


def test_redis_server_runs_in_a_session_of_its_own() -> None:
    """Ctrl-C in the terminal must reach the demo only, which stops Redis after the roles."""
    import os

    with EmbeddedRedis(appendonly=False) as server:
        assert server.process is not None
        pid = server.process.pid
        assert os.getsid(pid) == pid
        assert os.getpgid(pid) != os.getpgid(0)


def own_pid(server: EmbeddedRedis) -> int:
    client = redis.Redis(port=server.port)
    try:
        return int(client.info("server")["process_id"])
    finally:
        client.close()


def test_a_chosen_port_taken_before_redis_binds_it_is_chosen_again() -> None:
    """Another process binds the free port first (here: a plain socket, listening): the server
    comes up on another port, and it is the one this object started."""
    import socket

    server = EmbeddedRedis(appendonly=False)
    taken = server.port
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", taken))
        squatter.listen()
        try:
            server.start()
            assert server.port != taken
            assert server.process is not None
            assert own_pid(server) == server.process.pid
        finally:
            server.close()


def test_another_redis_on_the_chosen_port_is_never_taken_for_its_own() -> None:
    """The worst case of the race: another redis-server answers on the port. ``start()`` must
    not return on its answer (the suite would share one Redis between tests)."""
    with EmbeddedRedis(appendonly=False) as other:
        server = EmbeddedRedis(appendonly=False)
        server.port = other.port  # as if free_port() had handed out the same port twice
        try:
            server.start()
            assert server.port != other.port
            assert server.process is not None
            assert own_pid(server) == server.process.pid
            assert own_pid(other) != server.process.pid
        finally:
            server.close()


def test_a_port_asked_for_and_taken_fails_the_start_naming_it() -> None:
    import socket

    import pytest

    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        server = EmbeddedRedis(port=port, appendonly=False)
        try:
            with pytest.raises(RuntimeError, match=f"port {port}"):
                server.start()
            assert server.process is not None and server.process.poll() is not None
        finally:
            server.close()
