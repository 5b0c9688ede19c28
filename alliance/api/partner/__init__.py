"""The signed partner API that merchants' tills call, under ``/partner/v1``."""
