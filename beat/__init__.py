"""Celery Beat for flowcloud: the periodic schedule built from the configuration.

``flowcloud.beat.schedule`` turns ``schedules:`` into Celery's ``beat_schedule``;
``flowcloud.beat.app`` is the Celery application ``flowcloud beat`` runs. Beat only sends
messages: the work happens in tasks on the workers.
"""
