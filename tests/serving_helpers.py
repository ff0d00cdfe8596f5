"""Small registered models and an online store for the serving tests.

``register_models`` trains tiny LightGBM models on random frames of the 45 declared features (label from a
known logistic signal), logs them to MLflow and registers them: v1 promoted to champion, then v2 promoted
(champion = v2, previous = v1) — the state the registry leaves after a retrain that beat the champion.
``ensemble_model`` builds a calibrated ENSEMBLE of LightGBM, XGBoost and logistic regression the same way
the training stages do.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import lightgbm as lgb
import numpy as np
import pandas as pd
import polars as pl
import redis
from sklearn.calibration import CalibratedClassifierCV
from sklearn.frozen import FrozenEstimator

from churn_assets.feature_store.definitions import ENTITY, EVENT_TIMESTAMP, FEATURE_GROUPS
from churn_assets.feature_store.online import OnlineStore, SQLiteOnlineStore
from churn_assets.modeling.candidates import baseline_specs, xgboost_spec
from churn_assets.modeling.ensemble import BlendEnsemble
from churn_assets.modeling.evaluation import GateResult
from churn_assets.modeling.registry import ModelRegistry
from churn_assets.modeling.tracking import configure, log_candidate_run
from churn_assets.modeling.training_set import categorical_features, feature_names
from churn_assets.serving.prediction_log import PredictionLogWriter
from churn_assets.serving.runtime import Runtime
from churn_assets.serving.scoring import ScoringModel
from churn_assets.settings import ModelingSettings, ServingSettings, Settings
from tests.feature_helpers import random_group_frame

AS_OF = dt.datetime(2025, 6, 2)
PASS = [GateResult("auc_floor", 0.8, 0.7, True)]


def feature_frame(customer_ids: Sequence[int], seed: int = 0) -> pd.DataFrame:
    """One row per customer with the 45 declared features (random values as in the online store)."""
    tables = [
        pl.from_arrow(random_group_frame(g, customer_ids, [AS_OF], seed=seed + i)).drop(EVENT_TIMESTAMP)
        for i, g in enumerate(FEATURE_GROUPS)
    ]
    joined = tables[0]
    for t in tables[1:]:
        joined = joined.join(t, on=ENTITY)  # type: ignore[arg-type]
    frame = joined.sort(ENTITY).to_pandas()  # type: ignore[union-attr]
    for col in categorical_features():
        frame[col] = frame[col].astype("category")
    return frame


def labels(frame: pd.DataFrame, seed: int) -> np.ndarray:
    """0/1 labels from a known logistic signal of the first two numeric features."""
    rng = np.random.default_rng(seed)
    num = frame[feature_names()].select_dtypes("number")
    signal = (num.iloc[:, 0] / 1000 - 0.5) * 4 + (num.iloc[:, 1] / 100 - 0.5) * 2
    return (rng.random(len(frame)) < 1 / (1 + np.exp(-signal))).astype(int)


def ensemble_model(
    frame: pd.DataFrame,
    seed: int = 3,
    members: Sequence[str] = ("lightgbm", "xgboost", "logistic_regression"),
    weights: Sequence[float] = (0.5, 0.3, 0.2),
) -> CalibratedClassifierCV:
    """A sigmoid-calibrated blend (by default 0.5 LightGBM, 0.3 XGBoost, 0.2 logistic regression; other
    members: any ``baseline_specs`` name) fitted on ``frame`` (members on its first half, the calibrator
    on the second), as the training stages build one."""
    X, y = frame[feature_names()], labels(frame, seed)
    half = len(frame) // 2
    builders = {
        "lightgbm": lambda: lgb.LGBMClassifier(
            n_estimators=20, num_leaves=7, verbose=-1, random_state=seed, n_jobs=1
        ),
        "xgboost": lambda: xgboost_spec({"n_estimators": 20, "max_depth": 3}, seed).build(),
    }
    fitted = []
    for name in members:
        m = builders[name]() if name in builders else baseline_specs(seed, (name,))[0].build()
        fitted.append(m.fit(X.iloc[:half], y[:half]))
    blend = BlendEnsemble(list(members), fitted, list(weights))
    return CalibratedClassifierCV(FrozenEstimator(blend), method="sigmoid").fit(X.iloc[half:], y[half:])


def train_model(frame: pd.DataFrame, seed: int, n_estimators: int = 20) -> lgb.LGBMClassifier:
    y = labels(frame, seed)
    model = lgb.LGBMClassifier(
        n_estimators=n_estimators, num_leaves=7, verbose=-1, random_state=seed, n_jobs=1
    )
    return model.fit(frame[feature_names()], y)


def register(
    settings: Settings, model: object, threshold: float, auc: float, flavor: str = "lightgbm"
) -> str:
    tracking = configure(settings)
    logged = log_candidate_run(
        tracking, "final:test", model, flavor, {}, {"auc": auc, "threshold": threshold}
    )
    registry = ModelRegistry(settings)
    version = registry.register(logged, feature_names(), "d" * 64, {"auc": auc, "threshold": threshold}, PASS)
    champion = registry.aliases().get("champion")
    registry.consider(version.version, auc, None if champion is None else auc - 0.1, PASS)
    return version.version


def serving_settings(home: Path, **serving: object) -> Settings:
    modeling = ModelingSettings(registered_model_name="churn-model")  # type: ignore[call-arg]
    return Settings(home=home, modeling=modeling, serving=ServingSettings(**serving))  # type: ignore[arg-type]


def register_models(settings: Settings, n: int = 600) -> tuple[str, str]:
    """Two registered LightGBM versions (v1 then v2 promoted): returns (previous, champion)."""
    frame = feature_frame(range(1, n + 1))
    v1 = register(settings, train_model(frame, 1), threshold=0.4, auc=0.75)
    v2 = register(settings, train_model(frame, 2, n_estimators=30), threshold=0.5, auc=0.9)
    return v1, v2


def fill_online_store(store: OnlineStore, customer_ids: Sequence[int]) -> None:
    for i, group in enumerate(FEATURE_GROUPS):
        store.write(group.name, random_group_frame(group, customer_ids, [AS_OF], seed=i), now=AS_OF)


def remove_scratch_state(store: OnlineStore, redis_url: str, prefix: str) -> None:
    """Undo a scratch serving setup: ``store`` cleared and closed, and every Redis key under ``{prefix}:``
    deleted (the serving manifest lives in the scratch home, removed with it)."""
    store.clear()
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(match=f"{prefix}:*"):
        client.delete(key)
    store.close()


def redis_port(redis_url: str) -> int:
    """The port of a ``redis://`` URL (6379 when it names none)."""
    return urlsplit(redis_url).port or 6379


def proxied_redis_url(redis_url: str, proxy: TcpProxy) -> str:
    """``redis_url`` (same database, same credentials) reached through ``proxy`` on loopback."""
    parts = urlsplit(redis_url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@127.0.0.1:{proxy.port}" if userinfo else f"127.0.0.1:{proxy.port}"
    return urlunsplit(parts._replace(netloc=netloc))


class TcpProxy:
    """A loopback TCP proxy to a real server that the test can take down (``stop``) and bring back (``start``),
    or slow down: every chunk from the server is held ``delay`` seconds (a slow store)."""

    def __init__(self, target_port: int, port: int | None = None) -> None:
        import socket

        self.target_port = target_port
        if port is None:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
        self.port = port
        self.delay = 0.0
        self._server: object = None
        self._conns: list[object] = []

    def start(self) -> None:
        import socket
        import threading

        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(128)
        self._server = server

        def pipe(src: socket.socket, dst: socket.socket, from_server: bool) -> None:
            try:
                while data := src.recv(65536):
                    if from_server and self.delay > 0:
                        time.sleep(self.delay)
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                for s in (src, dst):
                    with contextlib.suppress(OSError):
                        s.close()

        def accept() -> None:
            while True:
                try:
                    client, _ = server.accept()
                except OSError:
                    return
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
                self._conns += [client, upstream]
                threading.Thread(target=pipe, args=(client, upstream, False), daemon=True).start()
                threading.Thread(target=pipe, args=(upstream, client, True), daemon=True).start()

        threading.Thread(target=accept, daemon=True).start()

    def stop(self) -> None:
        import socket

        assert isinstance(self._server, socket.socket)
        with contextlib.suppress(OSError):
            self._server.shutdown(socket.SHUT_RDWR)  # wakes the accept() thread on Linux
        self._server.close()
        for c in self._conns:
            assert isinstance(c, socket.socket)
            try:
                c.shutdown(socket.SHUT_RDWR)
                c.close()
            except OSError:
                pass
        self._conns = []


@contextlib.contextmanager
def in_process_runtime(home: Path, customers: int, **serving: object) -> Iterator[Runtime]:
    """A serving :class:`Runtime` in this process: one small LightGBM as version 1, ``customers``
    customers' features in a SQLite online store, a prediction log flushed only on demand."""
    settings = serving_settings(home, as_of=AS_OF.date(), **serving)
    model = ScoringModel(
        "churn-model", "1", train_model(feature_frame(range(1, 201)), 1), feature_names(), 0.5
    )
    store = SQLiteOnlineStore(settings.online_sqlite_path)
    fill_online_store(store, range(1, customers + 1))
    rt = Runtime(
        settings, {"1": model}, "1", store=store, writer=PredictionLogWriter(settings, flush_seconds=None)
    )
    try:
        yield rt
    finally:
        rt.close()
