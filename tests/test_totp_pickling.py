"""A TOTP provider refuses pickling like every other holder of a secret: its seed would be in
the pickle, and every access code for ever follows from it."""

from __future__ import annotations

import copy
import pickle

import pytest

from session_fsm.credentials import Totp
from tests.conftest import make_credentials

SEED = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_totp_is_not_picklable(protocol: int) -> None:
    with pytest.raises(TypeError) as info:
        pickle.dumps(Totp(SEED), protocol=protocol)
    assert SEED not in str(info.value)


def test_credentials_with_a_totp_secret_are_not_picklable_nor_copyable_with_the_seed() -> None:
    creds = make_credentials(access_code=None, totp_secret=SEED)
    assert isinstance(creds.access_code_provider, Totp)
    with pytest.raises(TypeError):
        pickle.dumps(creds.access_code_provider)
    with pytest.raises(TypeError):
        copy.deepcopy(creds.access_code_provider)
    with pytest.raises(TypeError):
        pickle.dumps(creds)
