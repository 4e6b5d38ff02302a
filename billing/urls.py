from django.urls import path

from billing import apis

urlpatterns = [
    path("wallet", apis.WalletApi.as_view(), name="wallet"),
    path("wallet/entries", apis.WalletEntryListApi.as_view(), name="wallet-entries"),
]
