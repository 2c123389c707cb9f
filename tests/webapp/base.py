"""Shared base for view tests (one test file per view, as in healthchecks)."""

from django.contrib.auth import get_user_model
from django.test import TestCase


class BaseTestCase(TestCase):
    def setUp(self):
        super().setUp()
        self.alice = get_user_model().objects.create_user("alice", password="password-alice")
