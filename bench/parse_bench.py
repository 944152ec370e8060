"""Benchmark of the streaming command-reply parser against a bare ``ET.fromstring``.

Usage: ``python bench/parse_bench.py [N]`` (N transactions, default 100000).

It builds a Get Import Result reply shaped like the real fixture, then reports its size, the
parser's throughput (MB/s, transactions/s, fed in 64 KiB chunks as the client does), the floor
(``ET.fromstring`` of the same bytes, which only builds the element tree), their ratio, and the
peak memory of each (tracemalloc, measured in separate runs so it does not skew the timings).
"""

from __future__ import annotations

import sys
import time
import tracemalloc
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from datetime import date, timedelta

from aisd.kontomatik import parse_command

CHUNK = 1 << 16
HEAD = """<?xml version="1.0" encoding="utf-8"?>
<reply status="200 OK" user="bench" ownerExternalId="owner-1"
       responseTimestamp="2023-05-23T07:42:50Z">
   <command id="455026009" state="successful" name="DefaultImportCommand" target="KontoBank">
      <progress><value>0</value></progress>
      <result>
         <owners><owner><name>Maria Sochacka</name><kind>OWNER</kind></owner></owners>
         <accounts>
            <account>
               <name>Konto 0</name>
               <iban>PL69137013140000049678278112</iban>
               <currencyBalance>259402.51</currencyBalance>
               <currencyFundsAvailable>259402.51</currencyFundsAvailable>
               <currencyName>PLN</currencyName>
               <directDebit available="true"/>
               <moneyTransactions>
"""
TRANSACTION = """                  <moneyTransaction>
                     <transactionOn>{on}</transactionOn>
                     <bookedOn>{on}</bookedOn>
                     <currencyAmount>{amount}</currencyAmount>
                     <currencyBalance>{balance}</currencyBalance>
                     <title>Zwrot za Sylwestra {i}</title>
                     <party>Jan Kowalski Dunikowskiego 23B, 01-200 Warszawa</party>
                     <partyIban>PL83130000002076700146310001</partyIban>
                     <kind>PRZELEW ZEWNĘTRZNY</kind>
                     <status>DONE</status>
                     <labels>
                        <label>monthly</label>
                     </labels>
                  </moneyTransaction>
"""
TAIL = """               </moneyTransactions>
            </account>
         </accounts>
      </result>
   </command>
</reply>
"""


def build_reply(count: int) -> bytes:
    """A successful command reply with ``count`` transactions, newest first."""
    start = date(2023, 5, 22)
    parts = [HEAD]
    for i in range(count):
        cents = (i * 7919) % 200_000 - 100_000
        parts.append(
            TRANSACTION.format(
                on=(start - timedelta(days=i // 50)).isoformat(),
                amount=f"{cents / 100:.2f}",
                balance=f"{250_000 + (i % 1000):.2f}",
                i=i,
            )
        )
    parts.append(TAIL)
    return "".join(parts).encode()


def chunks(data: bytes) -> Iterator[bytes]:
    """The body as the client sees it: fixed-size chunks."""
    view = memoryview(data)
    for i in range(0, len(data), CHUNK):
        yield bytes(view[i : i + CHUNK])


def ours(data: bytes) -> int:
    """Parse with the streaming parser; returns the transaction count."""
    _, command = parse_command(chunks(data), max_bytes=len(data))
    assert command.result is not None
    return command.result.transaction_count


def floor(data: bytes) -> int:
    """Build the bare element tree; returns the transaction count."""
    root = ET.fromstring(data)
    return sum(1 for _ in root.iter("moneyTransaction"))


def timed(run: Callable[[bytes], int], data: bytes) -> float:
    """Best of two runs, in seconds."""
    best = float("inf")
    for _ in range(2):
        began = time.perf_counter()
        run(data)
        best = min(best, time.perf_counter() - began)
    return best


def peak(run: Callable[[bytes], int], data: bytes) -> int:
    """Peak bytes allocated during one run (the input is allocated before, so not counted)."""
    tracemalloc.start()
    try:
        run(data)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def main(argv: list[str]) -> None:
    """Run the benchmark and print its figures."""
    count = int(argv[1]) if len(argv) > 1 else 100_000
    data = build_reply(count)
    assert ours(data) == floor(data) == count
    megabytes = len(data) / 1e6
    ours_s = timed(ours, data)
    floor_s = timed(floor, data)
    print(f"reply: {count} transactions, {len(data):,} bytes ({megabytes:.1f} MB)")
    for label, seconds in (("parse_command", ours_s), ("ET.fromstring", floor_s)):
        rates = f"{megabytes / seconds:7.1f} MB/s  {count / seconds:10,.0f} tx/s"
        print(f"{label:13} : {rates}  {seconds:.2f} s")
    print(f"ratio (ours / floor time): {ours_s / floor_s:.2f}x")
    print(f"peak memory  parse_command: {peak(ours, data) / 1e6:.1f} MB (typed result included)")
    print(f"peak memory  ET.fromstring: {peak(floor, data) / 1e6:.1f} MB (tree only)")


if __name__ == "__main__":
    main(sys.argv)
