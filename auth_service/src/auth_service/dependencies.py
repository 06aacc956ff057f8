"""What routes reach from the lifespan state (see common.state)."""

from typing import Annotated, TypedDict

from fastapi import Depends

from auth_service.qr.tickets import TicketService
from auth_service.service import AccountService
from auth_service.yandex.service import YandexAuth
from common.health import Readiness
from common.state import from_state


class State(TypedDict):
    readiness: Readiness
    accounts: AccountService
    yandex: YandexAuth
    tickets: TicketService


AccountsDep = Annotated[AccountService, Depends(from_state("accounts", AccountService))]
YandexDep = Annotated[YandexAuth, Depends(from_state("yandex", YandexAuth))]
TicketsDep = Annotated[TicketService, Depends(from_state("tickets", TicketService))]
