"""One frozen dataclass per TOML table of `config.toml`: every key, its default and its bounds.

A field's metadata holds what the loader (edge/config/load.py) checks it against: `choices`
(model names come from edge/perception/registry.py) or a `min`/`max` range. Rules between keys
are edge/config/rules.py; a table that has them checks them when it is built, in code as in
the loader (`SyncConfig(broker_host="x")` raises ConfigError). `CameraConfig` and `DoorConfig`
are checked by the loader only: their defaults are placeholders (no source, no camera) that a
file must fill in, while code builds them with what it has (`--source` cameras).
Every key is documented in docs/config.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edge.config.audit import MAX_AUDIT_RETENTION_DAYS, AuditConfig
from edge.config.privacy import PrivacyConfig
from edge.config.rules import enforce
from edge.perception.registry import BACKENDS, DETECTORS, EMBEDDERS, LIVENESS_MODELS, PRECISIONS


def _choice(*values: object) -> dict[str, Any]:
    return {"choices": values}


def _range(lo: float | None = None, hi: float | None = None) -> dict[str, Any]:
    return {"min": lo, "max": hi}


@dataclass(frozen=True, slots=True)
class ModelsConfig:
    dir: str = ""  # empty: $FACEGATE_MODELS_DIR or the repo's models/
    # auto: TFLite (XNNPACK) for FaceMesh and liveness when installed, ONNX Runtime otherwise
    backend: str = field(default="auto", metadata=_choice(*BACKENDS))
    threads: int = field(default=1, metadata=_range(1, 64))


@dataclass(frozen=True, slots=True)
class DetectConfig:
    model: str = field(default="short", metadata=_choice(*DETECTORS))
    min_score: float = field(default=0.5, metadata=_range(0.0, 1.0))
    nms_iou: float = field(default=0.3, metadata=_range(0.0, 1.0))
    max_faces: int = field(default=16, metadata=_range(1, 256))
    refine_small: bool = True


@dataclass(frozen=True, slots=True)
class AlignConfig:
    landmarks: str = field(default="mesh", metadata=_choice("mesh", "keypoints"))


@dataclass(frozen=True, slots=True)
class EmbedConfig:
    model: str = field(default="edgeface_xxs", metadata=_choice(*EMBEDDERS))
    precision: str = field(default="int8", metadata=_choice(*PRECISIONS))
    flip: bool = False


@dataclass(frozen=True, slots=True)
class QualityConfig:
    min_eye_distance_px: float = field(default=16.0, metadata=_range(0.0))
    min_sharpness: float = field(default=20.0, metadata=_range(0.0))
    max_yaw_deg: float = field(default=45.0, metadata=_range(0.0, 90.0))
    max_pitch_deg: float = field(default=35.0, metadata=_range(0.0, 90.0))
    min_brightness: float = field(default=40.0, metadata=_range(0.0, 255.0))
    max_brightness: float = field(default=215.0, metadata=_range(0.0, 255.0))
    max_clipped_fraction: float = field(default=0.25, metadata=_range(0.0, 1.0))

    def __post_init__(self) -> None:
        enforce(self, "quality")


@dataclass(frozen=True, slots=True)
class MatchConfig:
    # 1:N: the share of strangers' probes that may match anyone in the gallery; the cosine
    # threshold follows the gallery's size (edge/gallery/thresholds.py, docs/config.md).
    stranger_accept_rate: float = field(default=1e-3, metadata=_range(1e-6, 0.1))
    # 1:1 (a card or PIN chose the person): false-match rate per comparison, from the
    # calibration in models/thresholds.toml for the configured embedder.
    target_fmr: float = field(default=1e-4, metadata=_range(1e-6, 1e-2))
    # Explicit cosine threshold for both; 0 = derive them from the two rates above.
    threshold: float = field(default=0.0, metadata=_range(-1.0, 1.0))
    # "Not this person" (edge/gallery/negatives.py): a person with negative templates is named
    # only when the probe scores this much (cosine) higher on them than on their best negative.
    negative_margin: float = field(default=0.05, metadata=_range(0.0, 0.5))
    # Hours the probe of each grant / deny is kept (sealed) for `gallery reject-match`; 0 = off.
    keep_probes_h: float = field(default=24.0, metadata=_range(0.0, 720.0))
    # Most probes kept (the newest); ~2 KB each for a 512-d embedder.
    keep_probes_max: int = field(default=2000, metadata=_range(1, 1_000_000))


@dataclass(frozen=True, slots=True)
class GalleryConfig:
    # "" = --data-dir, else $STATE_DIRECTORY (systemd), else ~/.local/share/facegate
    data_dir: str = ""
    # "" = $CREDENTIALS_DIRECTORY/facegate-kek (systemd LoadCredential=), else <data_dir>/kek.key
    key_file: str = ""
    # Keep an encrypted copy of a large gallery's search index (edge/gallery/snapshot.py) so that a
    # restart with an unchanged gallery skips decrypting every template (100k: ~0.1 s, not ~1.4 s).
    index_snapshot: bool = True


@dataclass(frozen=True, slots=True)
class TrackConfig:
    # Run the detector on every Nth frame and predict boxes in between (CPU-short devices).
    detect_every: int = field(default=1, metadata=_range(1, 30))
    # Detections a new track needs before it counts (one-frame false positives never decide).
    min_hits: int = field(default=2, metadata=_range(1, 30))
    # A track unseen this long is lost; the same face coming back is a new track and decision.
    max_missed_ms: float = field(default=600.0, metadata=_range(0.0, 60000.0))
    # Overlap between a track's predicted box and a detection needed to continue the track.
    min_iou: float = field(default=0.2, metadata=_range(0.0, 1.0))
    # Mean grey-level change (0-255) of a thumbnail that counts as a scene cut: all tracks end.
    scene_cut: float = field(default=45.0, metadata=_range(0.0, 255.0))


@dataclass(frozen=True, slots=True)
class DecideConfig:
    # Good frames (quality gate passed) fused per track before deciding.
    min_frames: int = field(default=3, metadata=_range(1, 50))
    # Most frames kept per track (the best by quality).
    max_frames: int = field(default=8, metadata=_range(1, 100))
    # Decide with the good frames there are this long after the first one (ms of source time).
    max_wait_ms: float = field(default=40.0, metadata=_range(0.0, 60000.0))
    # 0 = a track with a face but no frame the quality gate accepts waits for one (a door: the
    # person may still turn to the camera). > 0 = decide this long after the first
    # FaceMesh-confirmed face whatever the frames (a kiosk that must answer fast; such an early
    # decision is "unknown", reason low_quality or no_usable_frame, and final for the track).
    max_face_wait_ms: float = field(default=0.0, metadata=_range(0.0, 60000.0))
    # Share of the track's frames whose own best match must be the fused match's person.
    min_vote: float = field(default=0.5, metadata=_range(0.0, 1.0))
    # Undecided tracks described (landmarks + embedding) per frame; the rest wait a frame.
    max_tracks_per_frame: int = field(default=4, metadata=_range(1, 64))


@dataclass(frozen=True, slots=True)
class CameraConfig:
    name: str = "cam0"
    # A video file, /dev/videoN or a device index, an rtsp:// or http(s):// URL, or a folder of images.
    source: str = ""
    width: int = field(default=0, metadata=_range(0, 8192))  # requested capture size; 0 = default
    height: int = field(default=0, metadata=_range(0, 8192))
    fps: float = field(default=0.0, metadata=_range(0.0, 240.0))  # processing cap; 0 = as delivered
    roi: tuple[int, ...] = ()  # x, y, width, height in source pixels; () = whole frame
    rotate: int = field(default=0, metadata=_choice(0, 90, 180, 270))
    # Groups allowed at this camera's door; () = every enrolled, currently valid person.
    groups: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DoorConfig:
    """One door (`[[door]]`): which camera opens it, its rules (edge/access/rules.py) and its outputs."""

    name: str = "door0"
    camera: str = ""  # the [[camera]] (or --source cam0, cam1...) whose decisions open this door
    # Access rules. groups () = every enrolled person whose consent and validity window hold.
    groups: tuple[str, ...] = ()
    # Weekly windows in `timezone` local time, e.g. "mon-fri 07:00-19:00", "sat 22:00-02:00"; () = always.
    schedule: tuple[str, ...] = ()
    holidays: tuple[str, ...] = ()  # "YYYY-MM-DD" dates on which holiday_schedule applies instead
    holiday_schedule: tuple[str, ...] = ()  # () = closed on holidays
    timezone: str = ""  # IANA name ("Europe/Berlin"); "" = the system's local time
    area: str = ""  # the area this door leads into; "" = no anti-passback at this door
    passback_s: float = field(default=600.0, metadata=_range(0.0, 7 * 86400.0))
    min_score: float = field(default=0.0, metadata=_range(-1.0, 1.0))  # 0 = the gallery's threshold
    liveness_required: bool = True  # a grant needs a live result (liveness on and passed)
    challenge_required: bool = False  # ... and the [liveness] challenge passed
    # Step-up (docs/liveness.md#step-up): a fused liveness score in [low, high) asks the face for
    # liveness_challenge before the track is decided. () = [the liveness threshold, the score with 19x
    # its odds): [0.5, 0.95) by default; an empty band ([0.0, 0.0]) = off.
    liveness_uncertain_band: tuple[float, ...] = ()
    # What is asked: "both" (a head turn and a blink), "turn", "blink" or "any" (either one).
    liveness_challenge: str = field(default="both", metadata=_choice("both", "turn", "blink", "any"))
    liveness_challenge_timeout_ms: float = field(default=5000.0, metadata=_range(500.0, 60000.0))
    two_person: bool = False  # two different granted people within two_person_window_s
    two_person_window_s: float = field(default=10.0, metadata=_range(1.0, 600.0))
    # Door state: relay energised this long per grant; alarms from the door contact.
    open_time_s: float = field(default=5.0, metadata=_range(0.1, 600.0))
    held_open_s: float = field(default=30.0, metadata=_range(1.0, 3600.0))
    # When the pipeline is unhealthy (no frame for unhealthy_after_s): "secure" keeps the door
    # locked, "safe" releases it until frames come back (egress / fire codes).
    fail: str = field(default="secure", metadata=_choice("secure", "safe"))
    unhealthy_after_s: float = field(default=5.0, metadata=_range(0.5, 3600.0))
    # Outputs: GPIO lines on gpio_chip (libgpiod); -1 = not wired.
    gpio_chip: str = "/dev/gpiochip0"
    relay_line: int = field(default=-1, metadata=_range(-1, 1023))
    relay_active_low: bool = False
    contact_line: int = field(default=-1, metadata=_range(-1, 1023))  # door contact, active = open
    wiegand_d0_line: int = field(default=-1, metadata=_range(-1, 1023))
    wiegand_d1_line: int = field(default=-1, metadata=_range(-1, 1023))
    wiegand_bits: int = field(default=26, metadata=_choice(26, 34))
    wiegand_facility: int = field(default=0, metadata=_range(0, 65535))
    osdp: str = field(default="", metadata=_choice("", "cp", "pd"))  # "" = no OSDP
    osdp_port: str = ""  # serial device, e.g. /dev/ttyUSB0 (RS-485)
    osdp_baud: int = field(default=9600, metadata=_choice(9600, 19200, 38400, 57600, 115200))
    osdp_address: int = field(default=1, metadata=_range(0, 126))
    osdp_scbk_file: str = ""  # 16-byte secure-channel base key (32 hex characters); "" = install mode
    osdp_output: int = field(default=0, metadata=_range(0, 255))  # CP: the PD output that drives the strike
    # Credentials (docs/door.md): "face"; "card_and_face" / "pin_and_face" (the card or PIN chooses
    # the person, the face is verified 1:1 within credential_window_s); "card_or_face".
    mode: str = field(default="face", metadata=_choice("face", "card_and_face", "pin_and_face", "card_or_face"))
    credential_window_s: float = field(default=10.0, metadata=_range(1.0, 120.0))
    # A Wiegand card reader wired to GPIO inputs on wiegand_in_chip; -1 = none.
    wiegand_in_chip: str = "/dev/gpiochip0"
    wiegand_in_d0: int = field(default=-1, metadata=_range(-1, 1023))
    wiegand_in_d1: int = field(default=-1, metadata=_range(-1, 1023))
    pin_max_attempts: int = field(default=3, metadata=_range(1, 100))  # wrong PINs within pin_lockout_s ...
    pin_lockout_s: float = field(default=60.0, metadata=_range(1.0, 86400.0))  # ... lock the keypad this long
    # true: a grant whose decision record cannot be written to the audit journal (a full disk)
    # does not unlock; false: it unlocks anyway (the alarm is raised either way).
    require_audit: bool = True


@dataclass(frozen=True, slots=True)
class ZmqConfig:
    # ZeroMQ endpoints (docs/door.md); "" = off. e.g. "tcp://127.0.0.1:7700", "ipc:///run/facegate/events".
    # Without CURVE only ipc:// (an absolute path) and loopback tcp:// are accepted.
    events: str = ""  # PUB: decision and door events
    control: str = ""  # ROUTER (REQ clients): identify, enroll, status, reload
    # How long an unknown face's embeddings are held for `enroll` after it left the camera.
    unknown_ttl_s: float = field(default=60.0, metadata=_range(1.0, 3600.0))
    # CURVE: this daemon's key pair (`facegate zmq keygen`, mode 0600) and the directory of client
    # public keys let in (`facegate zmq allow`); "" = CURVE off.
    curve_secret_key_file: str = ""
    allowed_clients_dir: str = ""
    # A larger message is dropped by libzmq, with its connection, before it is read; requests carry
    # no images (an identify or enroll is under 1 KB), so 1 MiB leaves room without inviting floods.
    max_message_bytes: int = field(default=1024 * 1024, metadata=_range(1024, 256 * 1024 * 1024))
    # `reload` is answered `rate_limited` within this long of the last one it accepted.
    reload_min_interval_s: float = field(default=30.0, metadata=_range(0.0, 86400.0))
    # Groups a kiosk `enroll` may put a person in; () = none (a kiosk customer gets no door group).
    enroll_groups: tuple[str, ...] = ()
    # A kiosk-enrolled person's validity ends at most this long after enrollment (also when none is asked).
    enroll_max_valid_days: int = field(default=365, metadata=_range(1, 3650))
    # Client key names (<allowed_clients_dir>/NAME.key) that may `withdraw`; () = none. Needs CURVE.
    withdraw_clients: tuple[str, ...] = ()
    withdraw_confirm_s: float = field(default=15.0, metadata=_range(2.0, 120.0))  # a withdraw token's life

    def __post_init__(self) -> None:
        enforce(self, "zmq")


@dataclass(frozen=True, slots=True)
class SyncConfig:
    # "" = sync off (the device works alone); else the MQTT broker's host (docs/sync.md).
    broker_host: str = ""
    broker_port: int = field(default=1883, metadata=_range(1, 65535))
    # MQTT client id and topic segment (facegate/v1/devices/<device_id>/...); required with broker_host.
    device_id: str = ""
    # Groups whose bundles this device takes (facegate/v1/groups/<g>/gallery).
    groups: tuple[str, ...] = ()
    # The hub's Ed25519 public key (64 hex characters or PEM): bundles that do not verify are refused.
    hub_sign_key_file: str = ""
    # The hub's X25519 public key: enrollments made here are uploaded sealed to it; "" = not uploaded.
    hub_seal_key_file: str = ""
    # TLS: the CA that signed the broker's certificate, and this device's client certificate + key.
    tls_ca_file: str = ""
    tls_cert_file: str = ""
    tls_key_file: str = ""
    # Broker login (sync/broker.py): user name, and the file holding its password ("" = none; a
    # bare file name is read from $CREDENTIALS_DIRECTORY when systemd's LoadCredential= set it).
    username: str = ""
    password_file: str = ""
    # A broker off this host (not 127.0.0.0/8, ::1, localhost) without TLS is refused unless true.
    allow_insecure_broker: bool = False
    keepalive_s: int = field(default=30, metadata=_range(5, 3600))
    # How long the broker keeps this device's session (queued bundles, acks) while it is away.
    session_expiry_s: int = field(default=7 * 86400, metadata=_range(0, 2**32 - 1))
    reconnect_min_s: int = field(default=1, metadata=_range(1, 3600))
    reconnect_max_s: int = field(default=60, metadata=_range(1, 3600))
    # Resend from the oldest unacknowledged outbox row when the hub acks nothing for this long.
    ack_timeout_s: float = field(default=10.0, metadata=_range(0.1, 3600.0))
    batch: int = field(default=100, metadata=_range(1, 5000))  # audit records per MQTT message
    window: int = field(default=16, metadata=_range(1, 1000))  # messages in flight awaiting the hub's ack
    status_interval_s: float = field(default=60.0, metadata=_range(1.0, 86400.0))
    # A bundle whose seq (the hub's clock in µs) is further ahead of max(this clock, the last seq)
    # is refused: one huge seq would otherwise block every later bundle (docs/sync.md).
    max_bundle_ahead_s: float = field(default=7 * 86400.0, metadata=_range(60.0, 10 * 365 * 86400.0))
    # A gallery bundle above this many MiB is refused unparsed (audited, nacked); ~4 KB per person.
    max_bundle_mib: int = field(default=64, metadata=_range(1, 256))
    homeassistant: bool = False  # announce the device to Home Assistant (MQTT discovery)
    homeassistant_prefix: str = "homeassistant"

    def __post_init__(self) -> None:
        enforce(self, "sync")


@dataclass(frozen=True, slots=True)
class LivenessConfig:
    # Presentation-attack detection per track (docs/liveness.md); off = no track is ever `spoof`.
    enabled: bool = True
    # Passive CNN: "v1se" (MiniFASNetV1SE, 4.0x context), "v2" (MiniFASNetV2, 2.7x) or "both".
    model: str = field(default="v1se", metadata=_choice(*LIVENESS_MODELS))
    precision: str = field(default="fp32", metadata=_choice(*PRECISIONS))
    # Best-quality frames of a track the CNN runs on (cost: this many forward passes per model).
    passive_frames: int = field(default=1, metadata=_range(1, 16))
    # A track whose fused score is within this of the threshold is re-scored with the other
    # model too (v1se <-> v2); 0 = never. Costs a second CNN pass only for uncertain tracks.
    recheck_margin: float = field(default=0.4, metadata=_range(0.0, 0.5))
    # Fused score at or above which a track is live; used when target_apcer = 0.
    threshold: float = field(default=0.5, metadata=_range(0.0, 1.0))
    # > 0: the threshold for this attack-acceptance rate, read from `calibration`.
    target_apcer: float = field(default=0.0, metadata=_range(0.0, 0.5))
    # TOML written by `facegate eval liveness --calibrate FILE` on this camera's own recordings.
    calibration: str = ""
    # Active challenge: "none", or "turn_head" (the yaw over the track must span challenge_yaw_deg).
    challenge: str = field(default="none", metadata=_choice("none", "turn_head"))
    challenge_yaw_deg: float = field(default=20.0, metadata=_range(5.0, 90.0))

    def __post_init__(self) -> None:
        enforce(self, "liveness")


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    # Prometheus text on http://address:port/metrics, plus /healthz and /readyz (docs/operations.md).
    enabled: bool = True
    address: str = "127.0.0.1"  # an IP address; "0.0.0.0" / "::" = every interface
    port: int = field(default=9733, metadata=_range(0, 65535))  # 0 = any free port (logged at start)
    # /healthz fails when the frame loop has not turned for this long (a wedged pipeline).
    stall_s: float = field(default=10.0, metadata=_range(0.5, 3600.0))

    def __post_init__(self) -> None:
        enforce(self, "metrics")


@dataclass(frozen=True, slots=True)
class HubConfig:
    """`facegate hub serve` and `facegate admin` (docs/hub.md): the hub's store, keys and broker."""

    # Hub state: hub.db (SQLite), hub_sign.key / hub_seal.key (Ed25519 / X25519 private keys).
    data_dir: str = "/var/lib/facegate-hub"
    # "" = SQLite at <data_dir>/hub.db; or postgresql://user@host:port/db (needs psycopg).
    database: str = ""
    # KEK that wraps every person key at rest; "" = <data_dir>/hub.key (created on first use, 0600).
    key_file: str = ""
    broker_host: str = "127.0.0.1"
    broker_port: int = field(default=1883, metadata=_range(1, 65535))
    # MQTT client id; "" = facegate-hub-<host name>. Each hub instance needs its own.
    client_id: str = ""
    # Shared-subscription group: instances with the same name split device messages between them.
    share_group: str = "facegate-hub"
    tls_ca_file: str = ""
    tls_cert_file: str = ""
    tls_key_file: str = ""
    # Broker login and the TLS rule, as in [sync] (sync/broker.py).
    username: str = ""
    password_file: str = ""
    allow_insecure_broker: bool = False
    # The hub console (sync/hub/console, docs/hub.md "Console"): sign-in, persons, review, fleet,
    # audit; 0 = off.
    web_port: int = field(default=0, metadata=_range(0, 65535))
    web_address: str = "127.0.0.1"
    # HTTPS for the console (PEM files); both or neither. Without them only a loopback address
    # is served, unless web_allow_insecure (a TLS-terminating reverse proxy in front).
    web_tls_cert_file: str = ""
    web_tls_key_file: str = ""
    web_allow_insecure: bool = False
    # Reverse proxies (IP addresses) whose X-Forwarded-For names the client: the login limit per
    # address then counts the browser's address, not the proxy's (which would lock everyone out).
    web_trusted_proxies: tuple[str, ...] = ()
    # A console session ends after this long without a request (and after 12 h in any case).
    web_session_idle_s: float = field(default=1800.0, metadata=_range(60.0, 43200.0))
    # One enrollment form's upload (all its photos together) is refused above this.
    web_max_upload_bytes: int = field(default=20_000_000, metadata=_range(100_000, 200_000_000))
    # A resync request costs a full signed bundle: per scope, at most one is answered this often
    # (later requests wait for the window to end, none is lost).
    resync_min_interval_s: float = field(default=30.0, metadata=_range(0.0, 3600.0))
    # A gap in a device's audit chain younger than this is the device's own resend in the making
    # (its [sync] ack_timeout_s, default 10 s): no alert, no resend request yet.
    audit_gap_grace_s: float = field(default=60.0, metadata=_range(0.0, 86400.0))
    audit_retention_days: int = field(default=0, metadata=_range(0, MAX_AUDIT_RETENTION_DAYS))  # prune older records; 0 = keep

    def __post_init__(self) -> None:
        enforce(self, "hub")


@dataclass(frozen=True, slots=True)
class Config:
    models: ModelsConfig = ModelsConfig()
    detect: DetectConfig = DetectConfig()
    align: AlignConfig = AlignConfig()
    embed: EmbedConfig = EmbedConfig()
    quality: QualityConfig = QualityConfig()
    match: MatchConfig = MatchConfig()
    gallery: GalleryConfig = GalleryConfig()
    track: TrackConfig = TrackConfig()
    decide: DecideConfig = DecideConfig()
    camera: tuple[CameraConfig, ...] = ()  # [[camera]] array of tables
    sync: SyncConfig = SyncConfig()
    liveness: LivenessConfig = LivenessConfig()
    metrics: MetricsConfig = MetricsConfig()
    door: tuple[DoorConfig, ...] = ()  # [[door]] array of tables
    zmq: ZmqConfig = ZmqConfig()
    privacy: PrivacyConfig = PrivacyConfig()
    audit: AuditConfig = AuditConfig()
    hub: HubConfig = HubConfig()
