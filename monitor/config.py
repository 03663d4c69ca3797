"""The one typed place for every tunable: windows, fusion thresholds, detectors, servers.

A TOML file (``--config FILE``) may override any field, section by section,
e.g. ``[fusion] alert_threshold = 0.8`` or ``[detectors.weights] temporal = 0.5``.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monitor.errors import ConfigError
from monitor.events import EVENT_TYPES


@dataclass
class WindowConfig:
    """Sliding analysis windows over the media timeline (seconds)."""

    window_s: float = 2.0
    hop_s: float = 0.5
    # Audio context kept on each side of a window so lags of +-max_lag_s can be searched.
    max_lag_s: float = 0.6
    # Fewer face frames than this fraction of the window -> insufficient evidence.
    min_face_fraction: float = 0.6
    # Less voiced audio than this fraction of the window -> insufficient evidence.
    min_speech_fraction: float = 0.2
    # Fewer intact frames than this fraction of those the call's frame rate gives (the
    # rest dropped, undecodable or missing) -> insufficient evidence, detectors not run:
    # thinned windows were scored into false alarms (issue 16). Measured in a soak of a
    # genuine call (docs/LIVE.md): windows with 60-70% of their frames had a window risk
    # >= 0.5 in 3 of 44, with 70% or more in 0 of 112.
    min_frames_fraction: float = 0.75
    # Audio lost (undecodable, dropped, never arrived) beyond 1 - this fraction of the
    # window -> insufficient evidence.
    min_audio_fraction: float = 0.6


@dataclass
class AudioConfig:
    sample_rate: int = 16000
    n_mels: int = 80
    hop_s: float = 0.010
    win_s: float = 0.025


@dataclass
class FaceConfig:
    mouth_crop_size: tuple[int, int] = (48, 96)  # height, width; lower face, as in Wav2Lip
    # Whole face at up to this detail: texture cues need the fine scale generators lose.
    face_crop_size: int = 256
    min_detection_confidence: float = 0.5
    # The landmark model runs on every n-th frame; optical flow carries the frames between.
    landmark_interval: int = 1
    # Faces tracked at once (each its own track); more are ignored.
    max_faces: int = 4


@dataclass
class FusionConfig:
    """How the decision reads as risk in [0, 1], and which detectors can clear a call.

    The levels are decided in nats (``[decision]``); ``risk`` maps the session's evidence
    so that ``suspicious`` starts at ``suspicious_threshold`` and ``alert`` at
    ``alert_threshold`` (``monitor.decision.evidence_risk``): dashboards and alert sinks
    can band and grade risks without knowing the nats.
    """

    suspicious_threshold: float = 0.5
    alert_threshold: float = 0.7
    # Only these detectors can clear a call: without their evidence (no speech, say) a
    # session is "unknown" however consistent the face looks; the others can only raise it.
    clear_requires: list[str] = field(default_factory=lambda: ["lip_sync"])


@dataclass
class DecisionConfig:
    """The calibrated sequential decision (monitor/decision.py, docs/CALIBRATION.md).

    Each window's detector scores become log-likelihood ratios (nats, manipulated against
    genuine; the maps are in ``calibration_file``), less ``drift_allowance_nats``, weighted
    for window overlap and summed over the session with a floor. A level is raised when
    that evidence crosses its threshold. ``tools/calibrate_decision.py`` chose the
    thresholds below for the target false-alarm rates on the train pool's genuine-call
    corpus.
    """

    # What the thresholds were chosen for: false level raises per hour of genuine calls.
    target_false_alerts_per_hour: float = 0.1
    target_false_suspicious_per_hour: float = 1.0
    suspicious_nats: float = 4.25
    alert_nats: float = 6.5
    # A level is left only when the evidence falls this far below its threshold.
    hysteresis_nats: float = 1.0
    # Evidence of a genuine call (from a detector in ``fusion.clear_requires``) needed
    # before a session reads "clear": no evidence never reads as clear. 1 nat (odds of
    # e to 1): a genuine 2 s window of lip-sync gives 1.4-2.9, while one window of swapped
    # speech can read 0.5 by chance (0.5 until 2026-12-05, when the face side's evidence
    # still went into the same sum).
    clear_nats: float = 1.0
    # The accumulated evidence stays within [floor, ceiling]: old innocence cannot hide a
    # new attack, and an old attack stops counting once genuine evidence returns.
    floor_nats: float = 0.0
    ceiling_nats: float = 8.75
    # Subtracted from every window's log-likelihood ratio before it is weighted and added
    # (CUSUM's reference value): a genuine caller whose windows read a little manipulated,
    # window after window, must not climb to a level over a long call. The smallest on a
    # 0.25 grid for which no genuine train-pool session looped into a 30-minute call of its
    # own reaches suspicious, those whose lip-sync evidence itself reads the audio off the
    # lips apart (tools/eval_calls.py; docs/CALIBRATION.md sections 6 and 7): 0.25 under
    # per_face, where only lip-sync is summed (0.5 under joint).
    drift_allowance_nats: float = 0.25
    # A detector without a calibration map for its version: its score is read as a
    # probability and its log-likelihood ratio clipped to this many nats.
    uncalibrated_llr_limit: float = 1.0
    # None: the packaged monitor/models/decision_calibration.json.
    calibration_file: str | None = None
    # How a window's detectors combine. "either": a window is explained by one of two
    # attacks, equally likely: audio that does not belong to the lips (the detectors in
    # audio_attack_detectors) or a forged face in sync with its audio (the others), so an
    # in-sync forgery's genuine-looking sync cannot cancel what the face shows
    # (docs/LIP_TIMING.md). "joint": their log-likelihood ratios add up, as if every attack
    # showed in every detector. "either" was the default on 2026-12-03 and 04, until
    # same-speaker long calls showed its cost: genuine faces whose cues read a little forged
    # window after window are no longer held down by their good sync, and 17 of 111 genuine
    # train-pool sessions reached alert within 30 minutes (docs/CALIBRATION.md section 6).
    # "per_face": audio that does not belong to the lips is summed window by window as
    # under "joint" (the audio side alone), while a forged face is read as one face: the
    # mean face-side evidence of the last face_horizon_s of windows, against how genuine
    # and forged faces spread between one another (calibration file's "face_reading"). The
    # session's evidence is the larger of the two. A face that reads a little forged in
    # every window then settles at what its mean says instead of climbing over a long call.
    # The default since 2026-12-06 ("joint" before: dev talking heads 0.61 -> 0.83 per-clip
    # AUC, genuine calls unchanged; docs/CALIBRATION.md section 7).
    attack_model: str = "per_face"
    audio_attack_detectors: list[str] = field(default_factory=lambda: ["lip_sync"])
    # The recent media the face reading reads (attack_model "per_face"): long enough to
    # average a face's windows, short enough that a face swapped in mid-call shows.
    face_horizon_s: float = 60.0


@dataclass
class DetectorsConfig:
    enabled: list[str] = field(default_factory=lambda: ["lip_sync", "temporal", "artifact"])
    disabled: list[str] = field(default_factory=list)
    # Multipliers of each detector's log-likelihood ratio (0 leaves it out of the decision).
    # The calibration already weighs a detector by how much its scores tell: keep 1.
    weights: dict[str, float] = field(
        default_factory=lambda: {
            "lip_sync": 1.0,
            "lip_timing": 1.0,
            "temporal": 1.0,
            "artifact": 1.0,
        }
    )
    # A detector that takes longer than this for one window is disabled for the session.
    time_budget_s: float = 2.0
    plugin_dirs: list[str] = field(default_factory=lambda: ["plugins"])


# Inference backends of the learned sync model (monitor/sync/backends.py); "auto" picks
# the first that works.
BACKEND_NAMES = ("auto", "tensorrt", "torch-cuda", "torch", "onnx")
# How the decision combines a window's detectors (DecisionConfig.attack_model).
ATTACK_MODELS = ("joint", "either", "per_face")
# "learned" (the trained model) or "baseline" (training-free cross-correlation).
LIP_SYNC_MODELS = ("learned", "baseline")


@dataclass
class LipSyncConfig:
    model: str = "learned"  # one of LIP_SYNC_MODELS
    backend: str = "auto"  # one of BACKEND_NAMES


@dataclass
class AlertsConfig:
    token: str | None = None
    client_queue_size: int = 256
    ping_interval_s: float = 20.0
    ping_timeout_s: float = 20.0


@dataclass
class LiveConfig:
    video_buffer_frames: int = 90
    # 20 ms frames: 5 s, longer than the video's 3.6 s (audio is cheap to keep)
    audio_buffer_frames: int = 250
    # Windows waiting for inference beyond this many are dropped (oldest first).
    max_pending_windows: int = 4
    # Seconds of each track's arrivals used to estimate its clock offset (then frozen).
    align_warmup_s: float = 1.0
    # Video frames that waited longer than this for analysis are dropped: lag stays bounded.
    max_frame_age_s: float = 1.5
    # A session whose media stops for this long is ended (client vanished).
    no_media_timeout_s: float = 5.0
    # A session that has sent no media this long after its offer was accepted is ended.
    connect_timeout_s: float = 10.0
    # WHIP offers beyond this many open sessions get 503.
    max_sessions: int = 16
    # Admission by measured load: a new session is refused (503 + Retry-After) when the
    # sessions' analysis, plus one more, would use more than max_utilization of
    # admission_cores (0: the cores this process may run on), or while any session is
    # dropping frames because its analysis fell behind.
    load_admission: bool = True
    admission_cores: float = 0.0
    max_utilization: float = 0.8
    # What one session's analysis costs (busy fraction of one core) until sessions have
    # been measured on this machine; then the measured figure replaces it.
    session_cost_cores: float = 0.5
    # A session that dropped frames this recently counts as "dropping now".
    overload_hold_s: float = 10.0
    # Per bearer token (or per client address when the server has no token): open
    # sessions, and sessions still without media (re-posted empty offers hold no slots).
    max_sessions_per_token: int = 8
    max_pending_per_token: int = 4
    # Seconds a client is told to wait (Retry-After) after a 503 or 429.
    retry_after_s: int = 10
    # Seconds a WHIP request body (the offer) may take to arrive.
    body_timeout_s: float = 5.0
    # Tokens accepted for WHIP publishing only, beside the shared --token (one per
    # publisher, so each has its own quota).
    publisher_tokens: list[str] = field(default_factory=list)
    # Memory: a new session is refused (503) when the server's RSS plus one session's
    # (measured 55-70 MiB at 640x480, docs/LIVE.md) would pass max_memory_mb (0: no limit).
    max_memory_mb: float = 0.0
    session_memory_mb: float = 100.0
    # glibc malloc arenas (0: glibc's default of 8 per core); fewer arenas let freed
    # session memory go back to the system (monitor/live/memory.py).
    malloc_arena_max: int = 2
    # ICE host candidates only on these addresses; empty: the address each WHIP
    # request arrived on (so only loopback when serving on 127.0.0.1).
    ice_addresses: list[str] = field(default_factory=list)


@dataclass
class SinksConfig:
    """Alert delivery (monitor/sinks, docs/ALERTS.md): where to, what, how often, how hard.

    Secrets may be set here or, taking precedence, in the environment
    (``DFMON_WEBHOOK_SECRET``, ``DFMON_SPLUNK_TOKEN``, ``DFMON_TEAMS_TOKEN``); never by flag.
    """

    # "KIND:TARGET", as --sink: webhook:URL, splunk:URL, syslog:udp://HOST:PORT,
    # syslog:tcp://HOST:PORT, teams-report:URL or teams-report:FILE.
    targets: list[str] = field(default_factory=list)
    events: list[str] = field(default_factory=lambda: ["alert", "summary"])
    # At most one alert notice per participant per this many media seconds (Graph: 60).
    throttle_s: float = 60.0
    # Notices waiting per sink beyond this many: the oldest goes to the dead-letter file.
    queue_size: int = 256
    timeout_s: float = 5.0
    max_attempts: int = 6
    backoff_s: float = 0.5
    backoff_max_s: float = 30.0
    # On exit, seconds given to queued notices before they are dead-lettered.
    drain_s: float = 10.0
    dead_letter: str = "dfmon-dead-letter.jsonl"
    # Names this monitor: CloudEvents source, HEC host, syslog HOSTNAME ("" = host name).
    monitor_name: str = ""
    webhook_secret: str | None = None
    webhook_cloudevents: bool = False
    splunk_token: str | None = None
    splunk_index: str | None = None
    splunk_sourcetype: str = "dfmon:event"
    syslog_facility: int = 16  # local0
    teams_token: str | None = None


@dataclass
class BusConfig:
    """The Redis Streams bus (``--bus``): event streams, worker heartbeats, sink groups."""

    # Every key starts with this, so several deployments can share one Redis.
    prefix: str = "dfmon"
    # Entries kept (approximately, XADD MAXLEN ~) in the stream of every event ...
    stream_maxlen: int = 100_000
    # ... and in each call's, participant's and session's own stream, which expire when idle.
    keyed_stream_maxlen: int = 10_000
    keyed_stream_idle_s: float = 86_400.0
    # Events a worker holds while Redis is away; beyond it the oldest are dropped (counted).
    buffer_events: int = 10_000
    # Events per round trip to Redis.
    batch_events: int = 256
    # Seconds between heartbeats, and how long a heartbeat stays valid (missed beats).
    heartbeat_s: float = 1.0
    worker_ttl_s: float = 3.0
    # A worker above this CPU share (its CPU time over the machine's cores) gets no more calls.
    max_worker_cpu: float = 0.9
    # Events a late /alerts client of the gateway first receives from the stream.
    history_events: int = 1000
    # Seconds a WHIP redirect ticket stays valid.
    ticket_ttl_s: float = 30.0
    # dfmon sinks (what it delivers, and how, is [sinks]): consumer group (one per sink:
    # GROUP:SINK), idle time after which a silent consumer's pending entries are taken
    # over, and how long delivered idempotency keys are remembered.
    sink_group: str = "dfmon-sinks"
    claim_idle_s: float = 30.0
    delivered_ttl_s: float = 7 * 86_400.0


@dataclass
class MonitorConfig:
    window: WindowConfig = field(default_factory=WindowConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    face: FaceConfig = field(default_factory=FaceConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    decision: DecisionConfig = field(default_factory=DecisionConfig)
    detectors: DetectorsConfig = field(default_factory=DetectorsConfig)
    lip_sync: LipSyncConfig = field(default_factory=LipSyncConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    live: LiveConfig = field(default_factory=LiveConfig)
    sinks: SinksConfig = field(default_factory=SinksConfig)
    bus: BusConfig = field(default_factory=BusConfig)

    def validate(self) -> MonitorConfig:
        w = self.window
        if not (0 < w.hop_s <= w.window_s):
            raise ConfigError(f"need 0 < hop ({w.hop_s}) <= window ({w.window_s})")
        if w.window_s > 60:
            raise ConfigError(f"window {w.window_s} s is too long (at most 60 s)")
        if self.face.landmark_interval < 1 or self.face.max_faces < 1:
            raise ConfigError("face.landmark_interval and face.max_faces must be at least 1")
        if not (0 <= w.min_frames_fraction <= 1 and 0 <= w.min_audio_fraction <= 1):
            raise ConfigError("window.min_frames_fraction and min_audio_fraction must be in [0, 1]")
        f = self.fusion
        if not (0 < f.suspicious_threshold < f.alert_threshold <= 1):
            raise ConfigError("need 0 < suspicious_threshold < alert_threshold <= 1")
        d = self.decision
        if not (d.floor_nats < d.suspicious_nats < d.alert_nats <= d.ceiling_nats):
            raise ConfigError(
                "need decision floor_nats < suspicious_nats < alert_nats <= ceiling_nats"
            )
        if not (0 <= d.hysteresis_nats < d.suspicious_nats - d.floor_nats):
            raise ConfigError("decision hysteresis_nats must be in [0, suspicious_nats - floor)")
        if d.attack_model not in ATTACK_MODELS:
            raise ConfigError(f"decision attack_model must be one of {ATTACK_MODELS}")
        if d.face_horizon_s <= 0:
            raise ConfigError("decision face_horizon_s must be positive")
        if d.clear_nats < 0 or d.uncalibrated_llr_limit < 0 or d.drift_allowance_nats < 0:
            raise ConfigError(
                "decision clear_nats, uncalibrated_llr_limit and drift_allowance_nats must be >= 0"
            )
        if d.target_false_alerts_per_hour <= 0 or d.target_false_suspicious_per_hour <= 0:
            raise ConfigError("decision false-alarm targets must be positive")
        budget = self.detectors.time_budget_s
        if not (0 < budget <= 3600):
            raise ConfigError(f"detectors.time_budget_s must be in (0, 3600] s, got {budget}")
        if any(weight < 0 for weight in self.detectors.weights.values()):
            raise ConfigError("detector weights must not be negative")
        live = self.live
        if live.max_sessions < 1 or live.max_sessions_per_token < 1:
            raise ConfigError("live.max_sessions and live.max_sessions_per_token must be >= 1")
        if live.max_pending_per_token < 1:
            raise ConfigError("live.max_pending_per_token must be >= 1")
        if not (0 < live.max_utilization <= 1):
            raise ConfigError("live.max_utilization must be in (0, 1]")
        if live.admission_cores < 0 or live.session_cost_cores <= 0:
            raise ConfigError("live.admission_cores must be >= 0, session_cost_cores > 0")
        if live.body_timeout_s <= 0 or live.connect_timeout_s <= 0 or live.retry_after_s < 0:
            raise ConfigError("live timeouts must be positive")
        if any(not token for token in live.publisher_tokens):
            raise ConfigError("live.publisher_tokens must not contain empty tokens")
        for address in live.ice_addresses:
            try:
                ipaddress.ip_address(address)
            except ValueError as exc:
                raise ConfigError(f"live.ice_addresses: {address!r} is not an IP address") from exc
        b = self.bus
        if not b.prefix or any(c.isspace() for c in b.prefix):
            raise ConfigError(f"bus.prefix must be a non-empty word, got {b.prefix!r}")
        if min(b.stream_maxlen, b.keyed_stream_maxlen, b.buffer_events, b.batch_events) < 1:
            raise ConfigError("bus stream lengths, buffer_events and batch_events must be >= 1")
        if not (0 < b.heartbeat_s < b.worker_ttl_s):
            raise ConfigError("need 0 < bus.heartbeat_s < bus.worker_ttl_s")
        if b.claim_idle_s <= 0 or b.delivered_ttl_s < 1:
            raise ConfigError("need bus.claim_idle_s > 0 and bus.delivered_ttl_s >= 1")
        self._validate_sinks()
        return self

    def _validate_sinks(self) -> None:
        s = self.sinks
        if s.throttle_s < 0:
            raise ConfigError(f"sinks.throttle_s must not be negative, got {s.throttle_s}")
        if s.queue_size < 1 or s.max_attempts < 1:
            raise ConfigError("sinks.queue_size and sinks.max_attempts must be at least 1")
        if not (s.timeout_s > 0 and s.backoff_s > 0 and s.backoff_max_s >= s.backoff_s):
            raise ConfigError("need sinks.timeout_s > 0 and 0 < backoff_s <= backoff_max_s")
        if s.drain_s < 0:
            raise ConfigError(f"sinks.drain_s must not be negative, got {s.drain_s}")
        if not 0 <= s.syslog_facility <= 23:
            raise ConfigError(f"sinks.syslog_facility must be 0-23, got {s.syslog_facility}")
        unknown = sorted(set(s.events) - set(EVENT_TYPES))
        if unknown:
            raise ConfigError(f"sinks.events: unknown event types {unknown}; known: {EVENT_TYPES}")


def _merge(instance: Any, overrides: dict[str, Any], where: str) -> Any:
    known = {f.name: f for f in dataclasses.fields(instance)}
    for key, value in overrides.items():
        if key not in known:
            raise ConfigError(f"unknown config key {where}{key}")
        current = getattr(instance, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"config section {where}{key} must be a table")
            _merge(current, value, f"{where}{key}.")
        elif isinstance(current, dict) and isinstance(value, dict):
            current.update(value)
        else:
            if isinstance(current, tuple) and isinstance(value, list):
                value = tuple(value)
            setattr(instance, key, value)
    return instance


def load_config(path: str | Path | None = None, **overrides: Any) -> MonitorConfig:
    """Defaults, then the TOML file, then keyword overrides as ``{"window": {"hop_s": 1}}``."""
    config = MonitorConfig()
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text())
        except FileNotFoundError as exc:
            raise ConfigError(f"config file not found: {path}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
        _merge(config, data, "")
    _merge(config, overrides, "")
    return config.validate()
