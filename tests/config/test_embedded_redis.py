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
