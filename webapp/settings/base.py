"""Settings shared by every environment. Every value a deployment may change is read here, from the
environment, and nowhere else."""

import os
import secrets
from datetime import timedelta
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent.parent


def env_bool(name: str, default: bool = False) -> bool:
    return os.environ.get(name, str(default)).strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


# Everything the running app writes (SQLite file, uploads, secret key, Redis data) lives under one folder.
VAR_DIR = Path(os.environ.get("PRUNELAB_VAR_DIR", BASE_DIR / "var")).resolve()
VAR_DIR.mkdir(parents=True, exist_ok=True)


def read_or_create_secret_key(path: Path) -> str:
    """A per-installation key: generated on first start into var/, never committed."""
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(50))
    return path.read_text().strip()


SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY") or read_or_create_secret_key(VAR_DIR / "secret_key")
DEBUG = env_bool("DJANGO_DEBUG", False)
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    # before staticfiles: `runserver` (make run, DEBUG) must leave static files to whitenoise, or they are
    # served uncompressed and uncached by Django's own handler
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "django_htmx",
    "csp",
    "axes",
    "webapp.core",
    "webapp.lab",
]

# Content-Security-Policy (django-csp): scripts only from this server's own files, so an injected <script> or
# handler attribute never runs; no inline script exists (charts' data travels as json_script, which is not
# executed). Styles allow inline: Plotly and htmx set element styles. Thumbnails of the image test are data:
# URLs; Plotly's PNG download makes a blob:.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'", "data:", "blob:"],
        "font-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # After sessions and auth (it needs request.user) and before any process_view: CsrfViewMiddleware's
    # process_view reads request.POST, i.e. the whole body, and every __call__ runs before any process_view.
    "webapp.core.middleware.guard_request_bodies",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # Last, as axes asks: it turns a locked-out sign-in into the lockout page.
    "axes.middleware.AxesMiddleware",
]

# axes first: a locked-out username+address is refused before the password is even checked.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]

ROOT_URLCONF = "webapp.urls"
WSGI_APPLICATION = "webapp.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "webapp.lab.demo.demo_status",
            ],
        },
    },
]

# SQLite by default; PostgreSQL (or any dj-database-url URL) when DATABASE_URL is set.
DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{VAR_DIR / 'prunelab.sqlite3'}"), conn_max_age=60
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Workers write per-epoch metrics while the web server reads: WAL lets readers and one writer overlap,
    # IMMEDIATE takes the write lock at BEGIN (no upgrade deadlock) and the timeout waits instead of failing
    # with "database is locked".
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(os.environ.get("PRUNELAB_STATIC_ROOT", VAR_DIR / "static"))
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
STATICFILES_FINDERS = [
    "django.contrib.staticfiles.finders.FileSystemFinder",
    "django.contrib.staticfiles.finders.AppDirectoriesFinder",
    "webapp.core.staticfinders.VendorFinder",
]
# Everywhere (make run, the tests, docker) static files are collected first (stack.run and tests/conftest.py
# run collectstatic; the image at build time) and whitenoise serves them from STATIC_ROOT: gzip-compressed
# copies and content-hashed names cached for a year ("immutable"), so a chart page does not fetch plotly.js's
# 4.8 MB again. An edited static file shows after the next start (make run collects on every start).
WHITENOISE_USE_FINDERS = False
WHITENOISE_AUTOREFRESH = False
STORAGES = {
    "default": {"BACKEND": "webapp.core.storage.WholeFilesStorage"},  # a failed copy leaves no half file
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
MEDIA_ROOT = Path(os.environ.get("PRUNELAB_MEDIA_ROOT", VAR_DIR / "media"))
MEDIA_URL = "media/"
# Model files that passed the sandbox, by SHA-256 (defenses.models.remember_verdicts): every process that shares
# VAR_DIR (the workers, the web server, after restarts) skips the sandbox's ~4 s for a file another one passed.
MODEL_VERDICT_DIR = VAR_DIR / "model-verdicts"
LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/experiments/"
LOGOUT_REDIRECT_URL = "/login/"

# Per-address limits count the address of the client, not of a proxy: with n reverse proxies in front, the
# n-th address from the right of X-Forwarded-For (the left ones are whatever the client wrote).
TRUSTED_PROXIES = int(os.environ.get("PRUNELAB_TRUSTED_PROXIES", 0))

# Sign-in throttling (django-axes, counts in the database so every gunicorn worker and host sees them):
# after PRUNELAB_LOGIN_FAILURE_LIMIT wrong passwords for one username from one address, that pair is locked for
# PRUNELAB_LOGIN_LOCKOUT_MINUTES after the last failure; tries during the lock do not extend it.
AXES_FAILURE_LIMIT = int(os.environ.get("PRUNELAB_LOGIN_FAILURE_LIMIT", 10))
AXES_COOLOFF_TIME = timedelta(minutes=float(os.environ.get("PRUNELAB_LOGIN_LOCKOUT_MINUTES", 15)))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_CLIENT_IP_CALLABLE = "webapp.core.clients.client_ip"
AXES_LOCKOUT_CALLABLE = "webapp.core.views.locked_out"

# API tokens: TOKEN_FAILURE_LIMIT wrong tokens from one address within TOKEN_FAILURE_WINDOW_SECONDS and every
# token from that address is answered 429 (with Retry-After) until the window has passed, before any lookup.
TOKEN_FAILURE_LIMIT = int(os.environ.get("PRUNELAB_TOKEN_FAILURE_LIMIT", 20))
TOKEN_FAILURE_WINDOW_SECONDS = int(os.environ.get("PRUNELAB_TOKEN_FAILURE_WINDOW_SECONDS", 900))

# Uploads: model and dataset files are streamed to a temporary file (never held in memory) and refused
# above this size. 2 GiB admits the published CSAW sets stored as float64 (0.7-0.8 GB each) and a
# VGG-Face-size model (about 530 MB). The same cap bounds the whole request body, judged from its
# Content-Length before a byte is read (webapp/core/middleware.py), with room for the multipart framing.
MAX_UPLOAD_BYTES = int(os.environ.get("PRUNELAB_MAX_UPLOAD_BYTES", 2 * 2**30))
MAX_REQUEST_OVERHEAD_BYTES = 2**20
# Resumable uploads (the tus protocol, webapp/lab/tus.py): a file of up to MAX_UPLOAD_BYTES arrives in PATCH
# requests of at most this many bytes each (the browser sends 8 MiB), each judged from its headers like any body.
MAX_UPLOAD_CHUNK_BYTES = int(os.environ.get("PRUNELAB_MAX_UPLOAD_CHUNK_BYTES", 16 * 2**20))
# Per user: unfinished (or finished but not yet used) uploads at once, and the bytes they declare together: what
# one account can make the server hold on disk before any check has looked at a file.
MAX_OPEN_UPLOADS = int(os.environ.get("PRUNELAB_MAX_OPEN_UPLOADS", 4))
MAX_OPEN_UPLOAD_BYTES = int(os.environ.get("PRUNELAB_MAX_OPEN_UPLOAD_BYTES", 4 * 2**30))
# An upload untouched for this long is removed (when anyone starts an upload, and by manage.py expire_uploads).
UPLOAD_EXPIRY_SECONDS = int(os.environ.get("PRUNELAB_UPLOAD_EXPIRY_SECONDS", 24 * 3600))
# Caps checked from a file's metadata before any value is read (webapp/lab/limits.py hands them to the
# library). Shape bombs are refused by the HDF5 door's stored-size rule whatever these say.
# Training work a team, and each of its users, may have queued and running at once, in fine-tuning-epoch units
# (webapp/lab/budgets.py): the seed report's whole study plans 570, a demo leaderboard about 1,810; a request
# that would pass the budget is refused with what is left, so one member cannot fill the shared workers.
TEAM_EPOCH_BUDGET = int(os.environ.get("PRUNELAB_TEAM_EPOCH_BUDGET", 3000))
USER_EPOCH_BUDGET = int(os.environ.get("PRUNELAB_USER_EPOCH_BUDGET", 2000))
# Storage a team, and each user, may keep (stored files plus unfinished uploads; webapp/lab/storage.py), and
# free disk that no upload may take: three valid 248 MB sets were stored in 5 s, so without these a host's
# disk is gone in minutes.
TEAM_STORAGE_BYTES = int(os.environ.get("PRUNELAB_TEAM_STORAGE_BYTES", 20 * 2**30))
USER_STORAGE_BYTES = int(os.environ.get("PRUNELAB_USER_STORAGE_BYTES", 10 * 2**30))
DISK_RESERVE_BYTES = int(os.environ.get("PRUNELAB_DISK_RESERVE_BYTES", 512 * 2**20))
# Neural Cleanse scans, and STRIP calibrations, that a team and that one user (across all their teams) may have
# waiting or running at once (webapp/lab/services.py): each holds a worker for minutes.
TEAM_PENDING_DETECTIONS = int(os.environ.get("PRUNELAB_TEAM_PENDING_DETECTIONS", 4))
USER_PENDING_DETECTIONS = int(os.environ.get("PRUNELAB_USER_PENDING_DETECTIONS", 4))
# Requests per signed-in user that cost the server real work (webapp/core/throttles.py; pages and API alike, DRF
# rate strings "N/second|minute|hour|day"): image tests load networks, previews plan grids, exports stream
# model files and bundles, figures start a Chromium for each PDF.
REQUEST_RATES = {
    "classify": os.environ.get("PRUNELAB_CLASSIFY_RATE", "30/minute"),
    "preview": os.environ.get("PRUNELAB_PREVIEW_RATE", "120/minute"),
    "export": os.environ.get("PRUNELAB_EXPORT_RATE", "30/minute"),
    "figure": os.environ.get("PRUNELAB_FIGURE_RATE", "10/minute"),
}
# A chart's PDF is drawn by Kaleido in this Chromium (webapp/lab/exports.py): one at a time per web process, a
# request waiting longer than CHART_RENDER_WAIT seconds is refused (the SVG, drawn in the browser, needs none).
CHROMIUM_PATH = Path(os.environ.get("PRUNELAB_CHROMIUM", "/usr/bin/chromium"))
MAX_CHART_RENDERS = int(os.environ.get("PRUNELAB_MAX_CHART_RENDERS", 1))
CHART_RENDER_WAIT = int(os.environ.get("PRUNELAB_CHART_RENDER_WAIT", 30))
# GoodNet bundles built at once in one web process (each is built once per content and kept).
MAX_BUNDLE_BUILDS = int(os.environ.get("PRUNELAB_MAX_BUNDLE_BUILDS", 2))
MAX_MODEL_PARAMS = int(os.environ.get("PRUNELAB_MAX_MODEL_PARAMS", 200_000_000))
MAX_DATASET_IMAGES = int(os.environ.get("PRUNELAB_MAX_DATASET_IMAGES", 200_000))
MAX_DATASET_IMAGE_PIXELS = int(os.environ.get("PRUNELAB_MAX_DATASET_IMAGE_PIXELS", 256 * 256))
# what a run's worker holds: every set of the experiment as float32 pixels (a CSAW study with three poisoned
# sets is 1.9 GB); more is refused when the experiment is made, before any work
MAX_RUN_PIXEL_BYTES = int(os.environ.get("PRUNELAB_MAX_RUN_PIXEL_BYTES", 4 * 2**30))
# the pixels' declared (uncompressed) size: what checking a set costs to decompress, about 3 s a GB
MAX_DATASET_BYTES = int(os.environ.get("PRUNELAB_MAX_DATASET_BYTES", 4 * 2**30))
MAX_IMAGE_UPLOAD_BYTES = int(os.environ.get("PRUNELAB_MAX_IMAGE_UPLOAD_BYTES", 8 * 2**20))
# Without a session or a valid API token a body can only be a sign-in form (a few hundred bytes).
ANONYMOUS_MAX_BODY_BYTES = int(os.environ.get("PRUNELAB_ANONYMOUS_MAX_BODY_BYTES", 64 * 2**10))
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 2**20
# stored uploads are the server account's alone (other local accounts must not read a team's files)
FILE_UPLOAD_PERMISSIONS = 0o600
FILE_UPLOAD_DIRECTORY_PERMISSIONS = 0o700
# every body that is not an upload or the image test's (forms, JSON): Django's own cap on what it reads into memory
FORM_MAX_BODY_BYTES = DATA_UPLOAD_MAX_MEMORY_SIZE = int(os.environ.get("PRUNELAB_FORM_MAX_BODY_BYTES", 2**20))
MAX_IMAGES_PER_TEST = 16
# the image test's loaded networks, kept in the web process: at most this many weights in all (a CSAW BadNet
# has about 0.6 M; 50 M weights is some 0.2 GB of arrays, more once TensorFlow holds them)
WEB_MODEL_CACHE_WEIGHTS = int(os.environ.get("PRUNELAB_WEB_MODEL_CACHE_WEIGHTS", 50_000_000))
DATA_UPLOAD_MAX_NUMBER_FILES = 32

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Token first: an anonymous API call gets 401 with a WWW-Authenticate header, not 403.
        "webapp.core.tokens.ThrottledTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # A JSON body must be an object: the views read named fields from it (webapp/lab/parsers.py).
    "DEFAULT_PARSER_CLASSES": [
        "webapp.lab.parsers.ObjectJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "webapp.lab.pagination.BoundedLimitOffsetPagination",
    "PAGE_SIZE": 100,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Prunelab API",
    "DESCRIPTION": "BadNets, datasets, experiments, results, GoodNets and image classification, per team.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # the experiment body lists every registered defense's parameters, read when the schema is made
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "webapp.lab.api.experiment_body_schema",
    ],
}

# Queue: Redis is broker and result store. `make run` and the tests start one when REDIS_URL is unset.
# Unset: the Redis of a running `make run` stack (it leaves its address in var/redis/url for manage.py commands
# in another shell), else the usual local port.
STACK_REDIS_ADDRESS = VAR_DIR / "redis" / "url"
REDIS_URL = os.environ.get("REDIS_URL") or (
    STACK_REDIS_ADDRESS.read_text().strip() if STACK_REDIS_ADDRESS.is_file() else "redis://127.0.0.1:6379/0"
)
LONGEST_RUN_SECONDS = int(os.environ.get("PRUNELAB_LONGEST_RUN_SECONDS", 6 * 3600))
# A running run whose heartbeat (written between batches) is older than this lost its worker: re-queued.
RUN_STALE_SECONDS = float(os.environ.get("PRUNELAB_RUN_STALE_SECONDS", 120))

# The cache holds the API-token failure counts, which every gunicorn worker and web host must share: Redis,
# which the queue needs anyway. Its own key prefix keeps it apart from Celery's keys in the same database
# (never call cache.clear(): Redis' FLUSHDB would empty the queue too).
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "prunelab-cache",
    }
}

CELERY_BROKER_URL = REDIS_URL
CELERY_RESULT_BACKEND = REDIS_URL
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_DEFAULT_QUEUE = "cpu"
# A worker on a machine with a GPU serves "gpu"; every worker can serve "cpu".
CELERY_TASK_QUEUES = {"cpu": {}, "gpu": {}, "cpu-side": {}, "gpu-side": {}}  # runs, and other work: side_lane
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# One task per worker child: TensorFlow never returns its memory, so a fresh child per job does.
CELERY_WORKER_MAX_TASKS_PER_CHILD = 1
# A message not acknowledged within the visibility timeout is handed to another worker: it must be longer
# than the longest run, or a long fine-tune would run twice (Celery docs, "Redis: visibility timeout").
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": LONGEST_RUN_SECONDS + 3600}
CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = {"visibility_timeout": LONGEST_RUN_SECONDS + 3600}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_TRACK_STARTED = True
CELERY_RESULT_EXPIRES = 7 * 24 * 3600

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("PRUNELAB_LOG_LEVEL", "INFO")},
}
