from services.runtime.service import run_service

from .app import serve

run_service("batches", serve)
