from allauth.account.adapter import DefaultAccountAdapter


class StaffOnlyAccountAdapter(DefaultAccountAdapter):
    """Staff accounts are created by Layers (createsuperuser / admin); nobody signs up."""

    def is_open_for_signup(self, request):
        return False
