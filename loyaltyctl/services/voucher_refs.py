"""``reward use VOUCHER --ref REF``: the till's reference for using a voucher, so that a
retry after a lost answer is recognised instead of refused as "already used"."""

from __future__ import annotations

from sqlmodel import Session, select

from loyaltyctl.errors import Conflict
from loyaltyctl.rules.limits import check_ref
from loyaltyctl.services.context import ProgramContext
from loyaltyctl.store.models import Voucher


def claim_use_ref(session: Session, ctx: ProgramContext, voucher: Voucher, ref: str | None) -> bool:
    """True when ``voucher`` was already used with ``ref`` (an identical retry: report
    it, change nothing). Otherwise ``ref`` is recorded on the voucher for the use about
    to happen; a ref already used for another voucher is a conflict."""
    if ref is None:
        return False
    ref = check_ref(ref, "--ref")
    if voucher.use_ref == ref and voucher.status == "used":
        return True
    other = session.exec(
        select(Voucher.code).where(Voucher.program_id == ctx.id, Voucher.use_ref == ref)
    ).first()
    if other is not None and other != voucher.code:
        raise Conflict(
            f"ref {ref} already used voucher {other}, not {voucher.code}",
            hint="give this use its own --ref",
        )
    if voucher.status == "issued":
        voucher.use_ref = ref
    return False
