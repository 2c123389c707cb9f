"""Settings shared by every environment. Every value a deployment may change is read here, from the
environment, and nowhere else."""

import os
import secrets
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
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "django_htmx",
    "webapp.core",
    "webapp.lab",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
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
# Without collectstatic (make run, tests) whitenoise serves straight from the apps' static folders.
WHITENOISE_USE_FINDERS = True
MEDIA_ROOT = Path(os.environ.get("PRUNELAB_MEDIA_ROOT", VAR_DIR / "media"))
MEDIA_URL = "media/"
LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/experiments/"
LOGOUT_REDIRECT_URL = "/login/"

# Uploads: model and dataset files are streamed to a temporary file (never held in memory) and refused
# above this size; CSAW's largest published set (12830 images) is about 100 MB as uint8.
MAX_UPLOAD_BYTES = int(os.environ.get("PRUNELAB_MAX_UPLOAD_BYTES", 512 * 2**20))
MAX_IMAGE_UPLOAD_BYTES = int(os.environ.get("PRUNELAB_MAX_IMAGE_UPLOAD_BYTES", 8 * 2**20))
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 2**20
DATA_UPLOAD_MAX_NUMBER_FILES = 32

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Token first: an anonymous API call gets 401 with a WWW-Authenticate header, not 403.
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # A JSON body must be an object: the views read named fields from it (webapp/lab/parsers.py).
    "DEFAULT_PARSER_CLASSES": [
        "webapp.lab.parsers.ObjectJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],  # fmt: skip
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "webapp.lab.pagination.BoundedLimitOffsetPagination",
    "PAGE_SIZE": 100,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Prunelab API",
    "DESCRIPTION": "BadNets, datasets, experiments, results, GoodNets and image classification, per team.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
}

# Queue: Redis is broker and result store. `make run` and the tests start one when REDIS_URL is unset.
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
LONGEST_RUN_SECONDS = int(os.environ.get("PRUNELAB_LONGEST_RUN_SECONDS", 6 * 3600))
# A running run whose heartbeat (written between batches) is older than this lost its worker: re-queued.
RUN_STALE_SECONDS = float(os.environ.get("PRUNELAB_RUN_STALE_SECONDS", 120))

CELERY_BROKER_URL = REDIS_URL
CELERY_RESULT_BACKEND = REDIS_URL
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_DEFAULT_QUEUE = "cpu"
# A worker on a machine with a GPU serves "gpu"; every worker can serve "cpu".
CELERY_TASK_QUEUES = {"cpu": {}, "gpu": {}}
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
