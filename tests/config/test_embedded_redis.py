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
