"""Keep what ``discover`` found in the database, for the camera set-up to offer."""

from __future__ import annotations

import dataclasses
from typing import Any

from sqlalchemy import select

from onvif_nvr.db import models
from onvif_nvr.db.engine import Database
from onvif_nvr.discovery.cameras import CameraReport, StreamProfile


async def save(db: Database, reports: list[CameraReport], wall_ns: int) -> None:
    def write() -> None:
        with db.session() as session, session.begin():
            for report in reports:
                row = session.get(models.DiscoveredDevice, report.endpoint)
                if row is None:
                    row = models.DiscoveredDevice(endpoint=report.endpoint)
                    session.add(row)
                values = report.as_dict()
                for field in (
                    "xaddr",
                    "status",
                    "reason",
                    "name",
                    "manufacturer",
                    "model",
                    "serial",
                    "firmware",
                ):
                    setattr(row, field, values[field])
                row.scopes = list(report.scopes)
                row.profiles = [dataclasses.asdict(p) for p in report.profiles]
                row.seen_wall_ns = wall_ns

    await db.run(write)


async def load(db: Database) -> list[CameraReport]:
    def read() -> list[Any]:
        with db.session() as session:
            return list(
                session.scalars(
                    select(models.DiscoveredDevice).order_by(models.DiscoveredDevice.name)
                )
            )

    rows = await db.run(read)
    return [
        CameraReport(
            endpoint=r.endpoint,
            xaddr=r.xaddr,
            status=r.status,
            reason=r.reason,
            name=r.name,
            manufacturer=r.manufacturer,
            model=r.model,
            serial=r.serial,
            firmware=r.firmware,
            scopes=tuple(r.scopes or ()),
            profiles=[StreamProfile(**p) for p in r.profiles or []],
        )
        for r in rows
    ]
