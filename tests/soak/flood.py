"""Part 3 of the soak: flood a ws.source server with every class of bad frame."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
from collections import Counter
from typing import TYPE_CHECKING, Any

import msgspec
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from flowstream import Workflow, write_workflow
from flowstream.core.workflow import Checkpoint

from .report import Report, SoakConfig, Tally
from .service import (
    JOURNAL,
    OUT_FILE,
    STORE,
    drain,
    free_port,
    start,
    until_listening,
)

if TYPE_CHECKING:
    import random
    from pathlib import Path

MAX_FRAME, HARD_MAX_FRAME = 4096, 16384
DEPTH = 1200
BAD_CLASSES = (
    "malformed_json",
    "invalid_msgpack",
    "wrong_schema",
    "binary_garbage",
    "oversize",
    "over_hard_limit",
    "deep_json",
    "deep_msgpack",
)
_MARKER = re.compile(rb"([a-z_]+)#(\d+)")


def flood_workflow(port: int) -> Workflow:
    """An ingestion server: good records to a file, dead letters to another."""
    wf = (
        Workflow("flood", mode="stream")
        .node(
            "intake",
            "ws.source",
            mode="server",
            port=port,
            encoding="auto",
            schema={"seq": "int", "cls": "str"},
            max_frame_bytes=MAX_FRAME,
            hard_max_frame_bytes=HARD_MAX_FRAME,
            journal=JOURNAL,
        )
        .node("out", "file.sink", path=OUT_FILE)
        .node("dead", "file.sink", path="dead.jsonl")
        .connect("intake -> out")
        .connect("intake.error -> dead")
    )
    wf.checkpoint = Checkpoint(path=STORE, interval_ms=200)
    return wf


def bad_frame(cls: str, i: int, rng: random.Random) -> str | bytes:
    """Bad frame ``i`` of class ``cls``, marked ``cls#i`` in its first bytes."""
    mark = f"{cls}#{i}"
    if cls == "malformed_json":
        return f'{{"cls": "{mark}", "seq": 1' if i % 2 else f'[{{"cls": "{mark}"}},,]'
    if cls == "invalid_msgpack":
        if i % 2:
            return b"\xc1" + mark.encode()  # 0xc1 is never used in MessagePack
        return msgspec.msgpack.encode({"cls": mark, "seq": 1})[:-1]  # cut short
    if cls == "wrong_schema":
        return json.dumps({"seq": mark, "cls": 1})
    if cls == "binary_garbage":
        return mark.encode() + b":" + rng.randbytes(rng.randint(8, 512))
    if cls == "oversize":
        return json.dumps({"seq": 1, "cls": mark, "pad": "x" * (MAX_FRAME + i)})
    if cls == "over_hard_limit":
        return json.dumps({"seq": 1, "cls": mark, "pad": "x" * HARD_MAX_FRAME})
    if cls == "deep_json":
        return f'["{mark}", ' + "[" * DEPTH + "]" * DEPTH + "]"
    if cls == "deep_msgpack":
        head = b"\x92" + msgspec.msgpack.encode(mark)  # [mark, [[[...]]]]
        return head + b"\x91" * DEPTH + b"\x90"
    msg = f"unknown frame class {cls!r}"
    raise ValueError(msg)


def flood_frames(
    rng: random.Random, good: int, bad: int
) -> tuple[list[str | bytes], list[str | bytes], Counter[str]]:
    """The flood: shuffled frames, frames for their own connections, counts sent.

    Good records go out one per frame or in arrays, as JSON text or as
    MessagePack; a few arrays also hold a wrong-schema record (the rest of
    the array must still come through).
    """
    frames: list[str | bytes] = []
    sent: Counter[str] = Counter()
    seq = 0
    while seq < good:
        n = min(good - seq, rng.choice((1, 1, 4, 16)))
        records = [{"seq": s, "cls": "good"} for s in range(seq + 1, seq + n + 1)]
        seq += n
        body: Any = records[0] if n == 1 else records
        frames.append(
            msgspec.msgpack.encode(body) if rng.random() < 0.3 else json.dumps(body)
        )
    sent["good"] = good
    alone: list[str | bytes] = []
    for cls in BAD_CLASSES:
        count = max(1, bad // 10) if cls == "over_hard_limit" else bad
        for i in range(count):
            frame = bad_frame(cls, i, rng)
            if cls == "over_hard_limit":
                alone.append(frame)
            elif cls == "wrong_schema" and i % 2:
                # A good record beside the bad one in one array.
                seq += 1
                sent["good"] += 1
                pair = [{"seq": seq, "cls": "good"}, json.loads(frame)]
                frames.append(json.dumps(pair))
            else:
                frames.append(frame)
        sent[cls] = count
    rng.shuffle(frames)
    return frames, alone, sent


async def send_frames(url: str, frames: list[str | bytes]) -> None:
    """Send ``frames`` on one connection, then close it normally."""
    async with connect(url, max_size=None, open_timeout=60) as ws:
        for frame in frames:
            await ws.send(frame)


async def send_alone(url: str, frame: str | bytes) -> None:
    """Send one frame on its own connection (the server may close it: 1009)."""
    with contextlib.suppress(ConnectionClosed):
        async with connect(url, max_size=None, open_timeout=60) as ws:
            await ws.send(frame)
            await ws.wait_closed()


async def flood_phase(cfg: SoakConfig, rng: random.Random, report: Report) -> None:
    """Flood a ws.source server with every class of bad frame; count each."""
    directory = cfg.workdir / "flood"
    directory.mkdir(parents=True)
    port = free_port()
    write_workflow(flood_workflow(port), directory / "wf.json")
    frames, alone, sent = flood_frames(rng, cfg.flood_good, cfg.flood_bad)
    proc = start(directory)
    url = f"ws://127.0.0.1:{port}/"
    try:
        await until_listening(port, proc)
        shares = [frames[i::4] for i in range(4)]
        async with asyncio.TaskGroup() as tg:
            for share in shares:
                tg.create_task(send_frames(url, share))
        for frame in alone:
            await send_alone(url, frame)
    except (OSError, ConnectionClosed, TimeoutError) as exc:
        report.problems.append(f"flood: sending failed: {exc!r}")
    if proc.poll() is not None:
        tail = (directory / "stderr.log").read_text(errors="replace")[-800:]
        report.problems.append(f"flood: the service died: {tail}")
    else:
        problem = await drain(proc, directory)
        if problem is not None:
            report.problems.append(problem)
    count_flood(directory, sent, report)


def count_flood(directory: Path, sent: Counter[str], report: Report) -> None:
    """Per class: what came out, what was dead-lettered, lost, twice."""
    good: Counter[int] = Counter()
    if (directory / OUT_FILE).exists():
        for line in (directory / OUT_FILE).read_text().splitlines():
            good[json.loads(line)["seq"]] += 1
    dead: dict[str, Counter[int]] = {cls: Counter() for cls in BAD_CLASSES}
    reasons: dict[str, str] = {}
    unknown = 0
    if (directory / "dead.jsonl").exists():
        for line in (directory / "dead.jsonl").read_text().splitlines():
            letter = json.loads(line)
            raw = base64.b64decode(letter["item"].get("raw") or "")
            found = _MARKER.search(raw)
            if found is not None and found[1].decode() in dead:
                cls = found[1].decode()
                dead[cls][int(found[2])] += 1
            elif "hard_max_frame_bytes" in letter["reason"]:
                # Its connection is closed before the frame is read: no raw.
                cls = "over_hard_limit"
                dead[cls][sum(dead[cls].values())] += 1
            else:
                unknown += 1
                continue
            reasons.setdefault(cls, letter["reason"])
    total_good = sent["good"]
    report.flood["good records"] = Tally(
        sent=total_good,
        delivered=sum(good.values()),
        lost=sum(1 for s in range(1, total_good + 1) if s not in good),
        duplicated=sum(n - 1 for n in good.values() if n > 1),
    )
    for cls in BAD_CLASSES:
        seen = dead[cls]
        report.flood[cls] = Tally(
            sent=sent[cls],
            dead_lettered=sum(seen.values()),
            lost=sum(1 for i in range(sent[cls]) if i not in seen),
            duplicated=sum(n - 1 for n in seen.values() if n > 1),
            reason=reasons.get(cls, ""),
        )
    if unknown:
        report.problems.append(f"flood: {unknown} dead letters of no known frame")
