"""The WeChat outbox killed mid-send: replica W1 takes the bot's reply to a follower, claims it and
dies (SIGKILL, failpoint ``wechat_claimed``) before calling WeChat's API; replica W2, started on the
same Redis, takes the turn over once W1's claim is older than ``BATON_RECLAIM_SECONDS`` and sends
it: the follower gets the reply exactly once.
"""

from __future__ import annotations

import signal
import time

import redis

from tests.api.conftest import WAIT
from tests.api.test_wechat_channel import APP_ID, SECRET, TOKEN, Follower
from tests.api.wechat_fake import FakeWeChatApi
from tests.conftest import TINY_KB, ServiceProcess


def test_a_reply_claimed_by_a_replica_that_died_is_sent_once_by_another(
    baton_service, redis_server, tmp_path
):
    url = redis_server.url.rsplit("/", 1)[0] + "/6"
    redis.Redis.from_url(url).flushdb()
    with FakeWeChatApi(APP_ID, SECRET) as wechat:
        env = {
            "BATON_REDIS_PREFIX": "wx-crash:",
            "BATON_WECHAT_TOKEN": TOKEN,
            "BATON_WECHAT_APP_ID": APP_ID,
            "BATON_WECHAT_APP_SECRET": SECRET,
            "BATON_WECHAT_API_BASE": wechat.base_url,
            "BATON_WECHAT_REPLY_SECONDS": "0.001",  # no passive reply: everything goes through the API
            "BATON_RECLAIM_SECONDS": "2",
        }
        first = ServiceProcess(
            TINY_KB,
            tmp_path / "w1",
            url,
            model_dir=baton_service.model_dir,
            env={**env, "BATON_FAILPOINT": "wechat_claimed"},
        )
        second = ServiceProcess(TINY_KB, tmp_path / "w2", url, model_dir=baton_service.model_dir, env=env)
        for service in (first, second):
            service.workdir.mkdir()
        try:
            first.start()
            follower = Follower(first)
            assert follower.say("how much is shipping").status_code == 200
            first.process.wait(timeout=WAIT)  # it dies holding the claim, before WeChat heard anything
            assert first.process.returncode == -signal.SIGKILL
            assert [m for m in wechat.sent if m.openid == follower.openid] == []

            second.start()
            deadline = time.monotonic() + WAIT
            while time.monotonic() < deadline and not [m for m in wechat.sent if m.openid == follower.openid]:
                time.sleep(0.1)
            time.sleep(3)  # a second copy would come within another reclaim round
            texts = [m.content for m in wechat.sent if m.openid == follower.openid]
            assert len(texts) == 1, texts
            assert "shipping" in texts[0].lower() or "运费" in texts[0]
            client = redis.Redis.from_url(url, decode_responses=True)
            try:
                assert client.xpending("wx-crash:outbox:wechat", "senders")["pending"] == 0
            finally:
                client.close()
        finally:
            first.stop()
            second.stop()
