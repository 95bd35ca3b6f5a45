"""A deterministic stand-in for GPT-4o-mini behind tests/chat_server.py: reads the Table 8 prompt
and answers with the choice the answer names, else a choice (or IDK) chosen by a hash of the answer,
so the dry run's scores see correct, wrong and rejected answers."""
from __future__ import annotations

import hashlib

from chat_server import ChatServer, Reply, user_prompt


def judge(body, n):
    lines = user_prompt(body).splitlines()
    answer = next((ln[len("The answer is:"):].strip() for ln in lines if ln.startswith("The answer is:")), "")
    start = lines.index("The choices are:") + 1
    options = lines[start:lines.index("Don't output any other information.")]
    named = [o for o in options if o != "IDK" and o.lower() in answer.lower()]
    if len(named) == 1:
        return Reply(named[0])
    return Reply(options[int(hashlib.sha256(answer.encode()).hexdigest(), 16) % len(options)])


def judge_server() -> ChatServer:
    return ChatServer(judge)


if __name__ == "__main__":  # python tests/dryrun_judge.py: serve until interrupted, print the base URL
    import time

    with judge_server() as server:
        print(server.base_url, flush=True)
        while True:
            time.sleep(3600)
