from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView

from webapp.core import views

urlpatterns = [
    path("", views.landing, name="landing"),
    path("health", views.health, name="health"),
    path("health/live", views.alive, name="alive"),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/", include(("webapp.lab.api", "api"))),
    path("", include("webapp.lab.urls")),
]
