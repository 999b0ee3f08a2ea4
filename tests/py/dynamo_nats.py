"""Dynamo's own event-plane code (ai-dynamo-runtime 1.6.1) against a local nats-server.

publish:   FpmDirectPublisher (what TensorRT-LLM workers use) publishes --count frames
           per dp rank with values derived from (rank, i); prints {"published": [...]}
           with every frame's fields, then shuts down.
subscribe: FpmEventSubscriber (what Dynamo's planner uses) receives messages until
           --count iteration frames (wall_time > 0) came, decodes each payload with
           msgspec and prints {"frame": ..., "hex": <the payload bytes>} per line, after a
           {"ready": true} line.

Runs with no etcd and no GPU: file discovery, NATS event plane. The caller sets
DYN_FILE_KV to a directory of its own (the variable Dynamo 1.6.1 reads for file
discovery; without it every process shares /tmp/dynamo_store_kv).
Bounded: exits after --max-seconds whatever happens.
"""
import argparse
import asyncio
import json
import os
import sys
import threading


def frame_values(rank, i):
    return dict(
        dp_rank=rank,
        scheduled_num_prefill_requests=1 + i % 3,
        scheduled_sum_prefill_tokens=100 * (i + 1) + rank,
        scheduled_sum_prefill_kv_tokens=7 * i,
        scheduled_num_decode_requests=2 + rank,
        scheduled_sum_decode_kv_tokens=1000 + 13 * i,
        queued_num_prefill_requests=i % 2,
        queued_sum_prefill_tokens=50 * i,
        queued_num_decode_requests=rank,
        queued_sum_decode_kv_tokens=3 * i + rank,
        wall_time_secs=0.001 * (i + 1) + 0.0001 * rank,
    )


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["publish", "subscribe"])
    ap.add_argument("--url", required=True)
    ap.add_argument("--endpoint", default="dynamo.backend.generate")
    ap.add_argument("--worker-id", default="trt-worker-1")
    ap.add_argument("--dp-size", type=int, default=2)
    ap.add_argument("--count", type=int, default=5)
    ap.add_argument("--max-seconds", type=float, default=60)
    args = ap.parse_args()
    threading.Timer(args.max_seconds, lambda: os._exit(3)).start()
    os.environ["NATS_SERVER"] = args.url
    if not os.environ.get("DYN_FILE_KV"):
        sys.exit("dynamo_nats.py: set DYN_FILE_KV to a directory of this test's own")
    from dynamo._core import DistributedRuntime, FpmDirectPublisher, FpmEventSubscriber

    rt = DistributedRuntime(asyncio.get_running_loop(), "file", "tcp", event_plane="nats")
    ep = rt.endpoint(args.endpoint)
    if args.mode == "publish":
        pub = FpmDirectPublisher(ep, args.worker_id, args.dp_size)
        # Give the publisher task a moment to join the event plane.
        await asyncio.sleep(0.5)
        sent = []
        for i in range(args.count):
            for rank in range(args.dp_size):
                v = frame_values(rank, i)
                pub.publish(**v)
                sent.append(v)
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.5)
        pub.shutdown()
        print(json.dumps({"published": sent, "worker_id": args.worker_id}), flush=True)
    else:
        import msgspec

        sub = FpmEventSubscriber(ep)
        loop = asyncio.get_running_loop()
        # The subscription starts with the first recv(); give it time to reach the
        # server before saying ready.
        pending = loop.run_in_executor(None, sub.recv)
        await asyncio.sleep(1.0)
        print(json.dumps({"ready": True}), flush=True)
        got = 0
        while got < args.count:
            raw = await pending
            if raw is None:
                break
            frame = msgspec.msgpack.decode(raw)
            print(json.dumps({"frame": frame, "hex": raw.hex()}), flush=True)
            if frame.get("wall_time", 0) > 0:
                got += 1
            pending = loop.run_in_executor(None, sub.recv)
        sub.shutdown()
    rt.shutdown()
    sys.stdout.flush()
    os._exit(0)


asyncio.run(main())
